"""The serving targets, one class each: config, artefacts, checks, publication and serving device.

Adding a target is one new module here and one entry in :data:`TARGET_TYPES`; a target's CPU and
GPU variants are its ``device`` parameter.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError
from radserve.export.targets._base import DEVICES, Device, ServingTarget, padded_batch_sizes
from radserve.export.targets.embedded import EmbeddedTarget
from radserve.export.targets.embedded_gpu import EmbeddedGpuTarget
from radserve.export.targets.onnxruntime import OnnxRuntimeTarget
from radserve.export.targets.tensorrt import TensorRtTarget

__all__ = [
    "DEVICES",
    "TARGETS",
    "TARGET_TYPES",
    "Device",
    "EmbeddedGpuTarget",
    "EmbeddedTarget",
    "OnnxRuntimeTarget",
    "ServingTarget",
    "TensorRtTarget",
    "as_target",
    "get_target",
    "padded_batch_sizes",
    "target_of",
]

TARGET_TYPES: dict[str, type[ServingTarget]] = {
    cls.name: cls for cls in (EmbeddedTarget, EmbeddedGpuTarget, OnnxRuntimeTarget, TensorRtTarget)
}
TARGETS: tuple[str, ...] = tuple(TARGET_TYPES)


def get_target(name: str, device: Device | None = None) -> ServingTarget:
    """The target called ``name`` on ``device`` (default: the target's first device).

    Raises:
        ExportError: an unknown target, or a device the target does not serve on.
    """
    try:
        cls = TARGET_TYPES[name]
    except KeyError:
        raise ExportError(f"unknown target {name!r}; known: {', '.join(TARGETS)}") from None
    return cls(device)


def as_target(target: ServingTarget | str) -> ServingTarget:
    """``target`` itself, or the named target on its default device."""
    return target if isinstance(target, ServingTarget) else get_target(target)


def target_of(config: pb.ModelConfig) -> ServingTarget | None:
    """The target that wrote ``config`` (on the device of its instance group); None: not radserve's."""
    for cls in TARGET_TYPES.values():
        if cls.serves(config):
            kinds = {group.kind for group in config.instance_group}
            device: Device = "cpu" if kinds == {pb.ModelInstanceGroup.KIND_CPU} else "gpu"
            return cls(device if device in cls.devices else None)
    return None
