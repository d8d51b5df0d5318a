"""Generated Triton configs, validated by parsing them with Triton's own ModelConfig schema."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError
from radserve.export.model_config import TARGETS, ServingOptions, build_config, parse_config, render_config
from radserve.export.targets import TARGET_TYPES, ServingTarget, get_target, target_of
from radserve.model_card import MODEL_CARD_PARAMETER, ModelCard
from radserve.server_config.serving_view import serving_device
from radserve.settings import BatchingDefaults

# every target on every device it serves on
VARIANTS = [get_target(name, device) for name, cls in TARGET_TYPES.items() for device in cls.devices]

CARD = ModelCard(
    name="spine_view", architecture="efficientnet_b6", labels=tuple("abcdefghij"), input_size=(528, 528)
)


@pytest.mark.parametrize("target", VARIANTS, ids=lambda target: target.label)
@pytest.mark.parametrize("accelerated", [False, True])
def test_config_text_parses_back_with_tritons_schema(target: ServingTarget, accelerated: bool) -> None:
    if accelerated and target != get_target("onnxruntime", "gpu"):
        with pytest.raises(ExportError, match="accelerator is for --target onnxruntime --device gpu"):
            build_config(CARD, target, ServingOptions(tensorrt_accelerator=True))
        return
    config = build_config(CARD, target, ServingOptions(tensorrt_accelerator=accelerated))
    parsed = parse_config(render_config(config))
    assert parsed == config
    assert parsed.name == "spine_view"
    assert list(parsed.input[0].dims) == [1, 528, 528]
    assert parsed.input[0].data_type == pb.TYPE_UINT8
    assert list(parsed.output[0].dims) == [10]
    assert parsed.output[0].label_filename == "labels.txt"
    assert ModelCard.from_json(parsed.parameters[MODEL_CARD_PARAMETER].string_value) == CARD
    # the target, its device, and the device the Kubernetes render reads, all from the config alone
    assert target_of(parsed) == target
    assert serving_device(parsed) == target.device


@pytest.mark.parametrize("target", TARGETS)
def test_batching_and_queue_policy(target: str) -> None:
    config = build_config(CARD, target, ServingOptions(batching=BatchingDefaults(max_batch_size=8)))
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


def test_onnxruntime_on_the_cpu_is_sized_by_the_serving_host() -> None:
    from radserve.model_card import HOST_SIZED_PARAMETER
    from radserve.server_config.serving_view import ORT_THREADS_PARAMETER, host_sized_config

    config = build_config(CARD, get_target("onnxruntime", "cpu"))
    assert [group.kind for group in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert config.parameters[HOST_SIZED_PARAMETER].string_value == "true"
    sized, changed = host_sized_config(render_config(config), instances=3, threads=2)
    served = parse_config(sized)
    assert changed and [group.count for group in served.instance_group] == [3]
    # the ONNX Runtime backend's own thread parameter, not the embedded model.py's
    assert served.parameters[ORT_THREADS_PARAMETER].string_value == "2"
    assert "onnxruntime_threads" not in served.parameters
    with pytest.raises(ExportError, match="serves on gpu, not 'cpu'"):
        get_target("tensorrt", "cpu")


@pytest.mark.parametrize("max_batch", [1, 8, 100, 256])
def test_tensorrt_graphs_cover_every_batch_the_batcher_can_form(max_batch: int) -> None:
    options = ServingOptions(batching=BatchingDefaults(max_batch_size=max_batch))
    config = build_config(CARD, "tensorrt", options)
    assert parse_config(render_config(config)) == config
    specs = config.optimization.cuda.graph_spec
    covered = []
    for spec in specs:
        lower = spec.graph_lower_bound.batch_size if spec.HasField("graph_lower_bound") else spec.batch_size
        covered.extend(range(lower, spec.batch_size + 1))
    assert covered == list(range(1, max_batch + 1))  # each size once, padded to the next graph
    # one profile: no preferred sizes, so the queue delay applies; warm-up at each graph size
    assert not config.dynamic_batching.preferred_batch_size
    assert [warmup.batch_size for warmup in config.model_warmup] == [spec.batch_size for spec in specs]


def test_embedded_gpu_prefers_its_padded_sizes_but_one() -> None:
    config = build_config(CARD, "embedded-gpu", ServingOptions(batching=BatchingDefaults(max_batch_size=100)))
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16, 32, 64, 100]
    assert config.parameters["padded_batch_sizes"].string_value == "1,2,4,8,16,32,64,100"


def test_onnxruntime_tensorrt_engines_are_cached_for_one_profile() -> None:
    batching = BatchingDefaults(max_batch_size=32, preferred_batch_sizes=(4, 16))
    config = build_config(CARD, "onnxruntime", ServingOptions(batching=batching, tensorrt_accelerator=True))
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    parameters = accelerator.parameters
    assert parameters["trt_engine_cache_enable"] == "true"
    assert parameters["trt_engine_cache_path"].startswith("/tmp/")  # writable under a read-only root
    shapes = [parameters[f"trt_profile_{key}_shapes"] for key in ("min", "opt", "max")]
    assert shapes == ["image:1x1x528x528", "image:16x1x528x528", "image:32x1x528x528"]
    assert [warmup.batch_size for warmup in config.model_warmup] == [1, 16, 32]


def test_priority_levels_put_requests_without_a_priority_last() -> None:
    config = build_config(CARD, "onnxruntime", ServingOptions(priority_levels=2))
    assert parse_config(render_config(config)) == config
    assert (config.dynamic_batching.priority_levels, config.dynamic_batching.default_priority_level) == (2, 2)
    assert not build_config(CARD, "onnxruntime").dynamic_batching.priority_levels
    with pytest.raises(ExportError, match="priority levels must be at least 1"):
        build_config(CARD, "onnxruntime", ServingOptions(priority_levels=-1))
