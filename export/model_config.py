"""Triton model configurations, built as Triton's own ``ModelConfig`` protobuf.

Building the message (rather than formatting text) means every generated ``config.pbtxt`` follows
Triton's schema by construction; :func:`parse_config` reads one back with the same schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from google.protobuf import text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError
from radserve.model_card import (
    BOXES_OUTPUT,
    CLASSES_OUTPUT,
    HOST_SIZED_PARAMETER,
    INPUT_NAME,
    MODEL_CARD_PARAMETER,
    ONNXRUNTIME_THREADS_PARAMETER,
    OUTPUT_NAME,
    SCORES_OUTPUT,
    ModelCard,
)
from radserve.settings import SETTINGS, BatchingDefaults

if TYPE_CHECKING:
    from radserve.export.tensorrt import EngineMetadata

Target = Literal["embedded", "embedded-gpu", "onnxruntime", "tensorrt"]
TARGETS: tuple[Target, ...] = ("embedded", "embedded-gpu", "onnxruntime", "tensorrt")
# Targets served by Triton's Python backend (model.py copied into the version folder).
PYTHON_TARGETS: tuple[Target, ...] = ("embedded", "embedded-gpu")
LABELS_FILE = "labels.txt"
# embedded-gpu: the network's state_dict; model.py rebuilds the architecture named in the model card.
WEIGHTS_FILE_PARAMETER = "weights_filename"
PADDED_SIZES_PARAMETER = "padded_batch_sizes"
MODEL_FILES: dict[Target, str] = {
    "embedded": "model.onnx",
    "embedded-gpu": "weights.pt",
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
}


@dataclass(frozen=True)
class ServingOptions:
    """How a model is batched, queued and placed; defaults come from :data:`SETTINGS`."""

    batching: BatchingDefaults = SETTINGS.batching
    versions_kept: int = 2
    warmup: bool = True
    tensorrt_accelerator: bool = False
    cuda_graphs: bool = True


# The ONNX Runtime backend's TensorRT accelerator, per model precision (the precision is in the ONNX;
# INT8 lets TensorRT run the Q/DQ nodes as int8 without a calibration table).
_ACCELERATOR_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


def build_config(
    card: ModelCard,
    target: Target,
    options: ServingOptions | None = None,
    engine: EngineMetadata | None = None,
    extra_outputs: Sequence[tuple[str, Sequence[int]]] = (),
) -> pb.ModelConfig:
    """The Triton configuration serving ``card``'s model on ``target``.

    ``extra_outputs`` (name, dims without the batch) follow ``probabilities``: FP32 tensors of a
    companion model, e.g. the Grad-CAM maps (export/gradcam.py).

    For ``tensorrt``, ``engine`` is the plan's metadata: Triton's TensorRT backend rejects a
    ``max_batch_size`` above the optimization profile's max, so a larger one raises
    :class:`ExportError` here, as does an input size the profile was not built for.
    """
    options = options or ServingOptions()
    batching = options.batching
    height, width = card.input_size
    if engine is not None:
        _check_engine_fits(card, batching, engine)
    config = pb.ModelConfig(name=card.name, max_batch_size=batching.max_batch_size)
    if target in PYTHON_TARGETS:
        config.backend = "python"
    elif target == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    else:
        config.platform = "tensorrt_plan"
    if target not in PYTHON_TARGETS:  # the Python backend takes default_model_filename as its model.py
        config.default_model_filename = MODEL_FILES[target]
    config.input.add(name=INPUT_NAME, data_type=pb.TYPE_UINT8, dims=[card.channels, height, width])
    _outputs(config, card)
    for name, dims in extra_outputs:
        config.output.add(name=name, data_type=pb.TYPE_FP32, dims=list(dims))

    _dynamic_batching(config.dynamic_batching, target, batching)
    _instance_group(config.instance_group.add(), target, batching)
    config.version_policy.latest.num_versions = options.versions_kept
    config.parameters[MODEL_CARD_PARAMETER].string_value = card.to_json()
    _target_parameters(config, card, target, options)
    if options.warmup:
        warmup = config.model_warmup.add(name="zeros", batch_size=1)
        warmup.inputs[INPUT_NAME].data_type = pb.TYPE_UINT8
        warmup.inputs[INPUT_NAME].dims.extend([card.channels, height, width])
        warmup.inputs[INPUT_NAME].zero_data = True
    return config


def _outputs(config: pb.ModelConfig, card: ModelCard) -> None:
    """``probabilities`` of a classifier; boxes, scores and classes of a detector (model_card.py)."""
    if card.task == "detection":
        k = card.max_detections
        config.output.add(name=BOXES_OUTPUT, data_type=pb.TYPE_FP32, dims=[k, 4])
        config.output.add(name=SCORES_OUTPUT, data_type=pb.TYPE_FP32, dims=[k])
        config.output.add(name=CLASSES_OUTPUT, data_type=pb.TYPE_INT64, dims=[k])
        return
    config.output.add(
        name=OUTPUT_NAME, data_type=pb.TYPE_FP32, dims=[card.num_classes], label_filename=LABELS_FILE
    )


def _dynamic_batching(dynamic: pb.ModelDynamicBatching, target: Target, batching: BatchingDefaults) -> None:
    preferred = padded_batch_sizes(batching.max_batch_size) if target == "embedded-gpu" else None
    dynamic.preferred_batch_size.extend(
        size for size in preferred or batching.preferred_batch_sizes if size <= batching.max_batch_size
    )
    dynamic.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    policy = dynamic.default_queue_policy
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = batching.queue_timeout_microseconds
    policy.allow_timeout_override = True
    policy.max_queue_size = batching.max_queue_size


def _instance_group(group: pb.ModelInstanceGroup, target: Target, batching: BatchingDefaults) -> None:
    if target == "embedded":
        # Sized by the serving host when `radserve serve` starts (HOST_SIZED_PARAMETER); 1 instance with
        # ONNX Runtime's default threads (all cores) for a tritonserver started by other means.
        group.kind = pb.ModelInstanceGroup.KIND_CPU
        group.count = 1
    elif target == "embedded-gpu":
        group.kind = pb.ModelInstanceGroup.KIND_GPU
        group.count = batching.gpu_python_instances
    else:
        group.kind = pb.ModelInstanceGroup.KIND_GPU
        group.count = batching.gpu_instances


def _target_parameters(
    config: pb.ModelConfig, card: ModelCard, target: Target, options: ServingOptions
) -> None:
    if target == "embedded":
        config.parameters[HOST_SIZED_PARAMETER].string_value = "true"
        config.parameters[ONNXRUNTIME_THREADS_PARAMETER].string_value = "0"
        config.parameters["onnx_model_filename"].string_value = MODEL_FILES[target]
    elif target == "embedded-gpu":
        # fixed shapes (DESIGN decision 10): model.py pads each batch to one of these, one CUDA graph each
        sizes = padded_batch_sizes(options.batching.max_batch_size)
        config.parameters[PADDED_SIZES_PARAMETER].string_value = ",".join(map(str, sizes))
        config.parameters[WEIGHTS_FILE_PARAMETER].string_value = MODEL_FILES[target]
    elif target == "onnxruntime":
        _onnxruntime_options(config, card, options)
    else:
        config.optimization.cuda.graphs = options.cuda_graphs


def padded_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """The fixed batch sizes of the embedded-gpu target: powers of two below ``max_batch_size``, and it."""
    powers = (1 << exponent for exponent in range(max_batch_size.bit_length()))
    return (*(size for size in powers if size < max_batch_size), max_batch_size)


def _check_engine_fits(card: ModelCard, batching: BatchingDefaults, engine: EngineMetadata) -> None:
    profile = engine.profile
    if batching.max_batch_size > profile["max_batch"]:
        raise ExportError(
            f"model {card.name!r}: max_batch_size {batching.max_batch_size} exceeds the TensorRT "
            f"plan's profile max {profile['max_batch']}; Triton would reject the config"
        )
    if (profile["height"], profile["width"]) != tuple(card.input_size):
        raise ExportError(
            f"model {card.name!r}: the plan was built for {profile['height']}x{profile['width']} "
            f"images, the model card says {card.input_size[0]}x{card.input_size[1]}"
        )
    if engine.precision != card.precision:
        raise ExportError(
            f"model {card.name!r}: the plan is {engine.precision}, the model card says {card.precision}"
        )


def _onnxruntime_options(config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
    if options.tensorrt_accelerator:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        accelerator.parameters["precision_mode"] = _ACCELERATOR_PRECISION[card.precision]
        accelerator.parameters["max_workspace_size_bytes"] = str(1 << 30)


def render_config(config: Message) -> str:
    """``config.pbtxt`` text for a configuration."""
    return text_format.MessageToString(config)


def parse_config(text: str) -> pb.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's schema; raises ``text_format.ParseError``."""
    return text_format.Parse(text, pb.ModelConfig())
