"""Generated Triton configs, validated by parsing them with Triton's own ModelConfig schema."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from radserve.export.model_config import TARGETS, ServingOptions, build_config, parse_config, render_config
from radserve.model_card import MODEL_CARD_PARAMETER, ModelCard
from radserve.settings import BatchingDefaults

CARD = ModelCard(
    name="spine_view", architecture="efficientnet_b6", labels=tuple("abcdefghij"), input_size=(528, 528)
)


@pytest.mark.parametrize("target", TARGETS)
def test_config_text_parses_back_with_tritons_schema(target: str) -> None:
    config = build_config(CARD, target)  # type: ignore[arg-type]
    parsed = parse_config(render_config(config))
    assert parsed == config
    assert parsed.name == "spine_view"
    assert list(parsed.input[0].dims) == [1, 528, 528]
    assert parsed.input[0].data_type == pb.TYPE_UINT8
    assert list(parsed.output[0].dims) == [10]
    assert parsed.output[0].label_filename == "labels.txt"
    assert ModelCard.from_json(parsed.parameters[MODEL_CARD_PARAMETER].string_value) == CARD


@pytest.mark.parametrize("target", TARGETS)
def test_batching_and_queue_policy(target: str) -> None:
    config = build_config(CARD, target, ServingOptions(batching=BatchingDefaults(max_batch_size=8)))  # type: ignore[arg-type]
    assert config.max_batch_size == 8
    assert all(size <= 8 for size in config.dynamic_batching.preferred_batch_size)
    policy = config.dynamic_batching.default_queue_policy
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    assert policy.max_queue_size > 0
    assert config.model_warmup[0].inputs["image"].zero_data


def test_targets_place_models_where_they_run() -> None:
    embedded = build_config(CARD, "embedded")
    assert embedded.backend == "python"
    assert embedded.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert not embedded.default_model_filename  # the Python backend would take it for model.py
    assert embedded.parameters["onnx_model_filename"].string_value == "model.onnx"
    onnx = build_config(CARD, "onnxruntime")
    assert (onnx.platform, onnx.default_model_filename) == ("onnxruntime_onnx", "model.onnx")
    plan = build_config(CARD, "tensorrt")
    assert (plan.platform, plan.default_model_filename) == ("tensorrt_plan", "model.plan")
    assert plan.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU


def test_parse_rejects_fields_outside_the_schema() -> None:
    with pytest.raises(Exception, match="no_such_field"):
        parse_config('name: "x"\nno_such_field: 1\n')


@pytest.mark.parametrize(("precision", "mode"), [("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8")])
def test_onnxruntime_tensorrt_accelerator_follows_the_precision(precision: str, mode: str) -> None:
    card = CARD.replace(precision=precision)
    config = build_config(card, "onnxruntime", ServingOptions(tensorrt_accelerator=True))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == mode
    assert parse_config(render_config(config)) == config
    plain = build_config(card, "onnxruntime")
    assert not plain.optimization.execution_accelerators.gpu_execution_accelerator


def test_tensorrt_config_uses_cuda_graphs_and_versions() -> None:
    config = build_config(CARD, "tensorrt", ServingOptions(versions_kept=3, cuda_graphs=True))
    assert config.optimization.cuda.graphs
    assert config.version_policy.latest.num_versions == 3
    assert parse_config(render_config(config)) == config
