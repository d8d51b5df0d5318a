"""Triton model configurations, built as Triton's own ``ModelConfig`` protobuf.

Building the message (rather than formatting text) means every generated ``config.pbtxt`` follows
Triton's schema by construction; :func:`parse_config` reads one back with the same schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.protobuf import text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError
from radserve.export.targets import TARGETS, ServingTarget, as_target, padded_batch_sizes
from radserve.export.targets.embedded_gpu import PADDED_SIZES_PARAMETER, WEIGHTS_FILE_PARAMETER
from radserve.model_card import (
    BOXES_OUTPUT,
    CLASSES_OUTPUT,
    INPUT_NAME,
    MODEL_CARD_PARAMETER,
    OUTPUT_NAME,
    SCORES_OUTPUT,
    ModelCard,
)
from radserve.settings import SETTINGS, BatchingDefaults

if TYPE_CHECKING:
    from radserve.export.tensorrt_plan import EngineMetadata

__all__ = [
    "LABELS_FILE",
    "PADDED_SIZES_PARAMETER",
    "TARGETS",
    "WEIGHTS_FILE_PARAMETER",
    "ServingOptions",
    "build_config",
    "dynamic_batching",
    "padded_batch_sizes",
    "parse_config",
    "render_config",
]

LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class ServingOptions:
    """How a model is batched, queued and placed; defaults come from :data:`SETTINGS`."""

    batching: BatchingDefaults = SETTINGS.batching
    versions_kept: int = 2
    warmup: bool = True
    tensorrt_accelerator: bool = False
    cuda_graphs: bool = True
    # queue priority levels (1 highest); requests without a priority take the lowest (backfill)
    priority_levels: int = 0


def build_config(
    card: ModelCard,
    target: ServingTarget | str,
    options: ServingOptions | None = None,
    engine: EngineMetadata | None = None,
    extra_outputs: Sequence[tuple[str, Sequence[int]]] = (),
) -> pb.ModelConfig:
    """The Triton configuration serving ``card``'s model on ``target`` (a target or its name).

    ``extra_outputs`` (name, dims without the batch) follow ``probabilities``: FP32 tensors of a
    companion model, e.g. the Grad-CAM maps (export/gradcam.py).

    For ``tensorrt``, ``engine`` is the plan's metadata: Triton's TensorRT backend rejects a
    ``max_batch_size`` above the optimization profile's max, so a larger one raises
    :class:`ExportError` here, as does an input size the profile was not built for.
    """
    options = options or ServingOptions()
    target = as_target(target)
    batching = options.batching
    height, width = card.input_size
    if engine is not None:
        _check_engine_fits(card, batching, engine)
    if options.tensorrt_accelerator and not target.accelerates():
        raise ExportError(
            f"model {card.name!r}: the TensorRT accelerator is for --target onnxruntime --device gpu, "
            f"not {target.label}"
        )
    config = pb.ModelConfig(name=card.name, max_batch_size=batching.max_batch_size)
    config.input.add(name=INPUT_NAME, data_type=pb.TYPE_UINT8, dims=[card.channels, height, width])
    _outputs(config, card)
    for name, dims in extra_outputs:
        config.output.add(name=name, data_type=pb.TYPE_FP32, dims=list(dims))
    dynamic_batching(config.dynamic_batching, batching, target.preferred_batch_sizes(batching))
    if options.priority_levels:
        _priorities(config.dynamic_batching, options.priority_levels)
    config.version_policy.latest.num_versions = options.versions_kept
    config.parameters[MODEL_CARD_PARAMETER].string_value = card.to_json()
    target.configure(config, card, options)
    if options.warmup:
        for size in target.warmup_batch_sizes(options):
            warmup = config.model_warmup.add(name=f"zeros_{size}", batch_size=size)
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


def dynamic_batching(
    dynamic: pb.ModelDynamicBatching, batching: BatchingDefaults, preferred: tuple[int, ...] | None = None
) -> None:
    """Fill ``dynamic`` from ``batching``: preferred sizes (default: the settings' up to the max),
    queue delay and queue policy."""
    if preferred is None:
        preferred = tuple(size for size in batching.preferred_batch_sizes if size <= batching.max_batch_size)
    dynamic.preferred_batch_size.extend(preferred)
    dynamic.max_queue_delay_microseconds = batching.max_queue_delay_microseconds
    policy = dynamic.default_queue_policy
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = batching.queue_timeout_microseconds
    policy.allow_timeout_override = True
    policy.max_queue_size = batching.max_queue_size


def _priorities(dynamic: pb.ModelDynamicBatching, levels: int) -> None:
    """``levels`` queues, 1 first; a request without a priority is backfill, at the lowest level.

    The batcher takes requests of a higher level first; every level keeps the default queue policy
    (model_configuration.md, 'Priority').
    """
    if levels < 1:
        raise ExportError(f"priority levels must be at least 1, got {levels}")
    dynamic.priority_levels = levels
    dynamic.default_priority_level = levels


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


def render_config(config: Message) -> str:
    """``config.pbtxt`` text for a configuration."""
    return text_format.MessageToString(config)


def parse_config(text: str) -> pb.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's schema; raises ``text_format.ParseError``."""
    return text_format.Parse(text, pb.ModelConfig())
