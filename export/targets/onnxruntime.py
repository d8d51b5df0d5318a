"""``onnxruntime``: Triton's ONNX Runtime backend (NGC containers), on the GPU or on the CPU.

On the CPU (``--device cpu``) the model is sized by the serving host as the embedded target is
(``radserve serve`` writes the instance count and ``intra_op_thread_count``); on the GPU it may run
under ONNX Runtime's TensorRT execution provider, with its engines cached under a writable folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tritonclient.grpc import model_config_pb2 as pb

from radserve.export.targets._base import Device, ServingTarget, check_onnx, instance_kind
from radserve.model_card import HOST_SIZED_PARAMETER, INPUT_NAME, ModelCard
from radserve.server_config.serving_view import ORT_THREADS_PARAMETER

if TYPE_CHECKING:
    from radserve.export.model_config import ServingOptions
    from radserve.settings import BatchingDefaults

__all__ = ["ENGINE_CACHE_PATH", "OnnxRuntimeTarget"]

# The TensorRT execution provider's engine cache: under /tmp, the one writable folder of a pod
# with a read-only root file system (docs/how-to/tensorrt-ngc.md, 'Batching that hits the engine').
ENGINE_CACHE_PATH = "/tmp/radserve-ort-trt"
_ACCELERATOR_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


class OnnxRuntimeTarget(ServingTarget):
    """``model.onnx`` on ``platform: onnxruntime_onnx``; GPU by default, CPU with ``device="cpu"``."""

    name: ClassVar[str] = "onnxruntime"
    devices: ClassVar[tuple[Device, ...]] = ("gpu", "cpu")
    model_file: ClassVar[str] = "model.onnx"

    @classmethod
    def serves(cls, config: pb.ModelConfig) -> bool:
        return config.platform == "onnxruntime_onnx" or config.backend == "onnxruntime"

    def configure(self, config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = self.model_file
        if self.device == "cpu":
            # one instance, ONNX Runtime's default threads; `radserve serve` sizes it to its host
            config.instance_group.add(kind=instance_kind("cpu"), count=1)
            config.parameters[HOST_SIZED_PARAMETER].string_value = "true"
            config.parameters[ORT_THREADS_PARAMETER].string_value = "0"
            return
        config.instance_group.add(kind=instance_kind("gpu"), count=options.batching.gpu_instances)
        if options.tensorrt_accelerator:
            _tensorrt_accelerator(config, card, options.batching)

    def accelerates(self) -> bool:
        return self.device == "gpu"

    def warmup_batch_sizes(self, options: ServingOptions) -> tuple[int, ...]:
        # each size of the accelerator's profile: its engine is built before the first request
        return _profile_sizes(options.batching) if options.tensorrt_accelerator else (1,)

    def int8_scheme(self, options: ServingOptions | None) -> str:
        return "s8s8" if options is not None and options.tensorrt_accelerator else "u8s8"

    def check_version(
        self, folder: Path, config: pb.ModelConfig, card: ModelCard | None, where: str, problems: list[str]
    ) -> None:
        check_onnx(folder / (config.default_model_filename or self.model_file), where, config, problems)


def _profile(batching: BatchingDefaults) -> tuple[int, int, int]:
    """min, opt, max batch of the accelerator's one profile (opt: the largest preferred size)."""
    preferred = [size for size in batching.preferred_batch_sizes if size <= batching.max_batch_size]
    return 1, max(preferred, default=batching.max_batch_size), batching.max_batch_size


def _profile_sizes(batching: BatchingDefaults) -> tuple[int, ...]:
    return tuple(sorted(set(_profile(batching))))


def _tensorrt_accelerator(config: pb.ModelConfig, card: ModelCard, batching: BatchingDefaults) -> None:
    """The TensorRT execution provider with a cached engine for one profile covering 1..max batch.

    Without a cache path the provider rebuilds its engines at every load; without profile shapes it
    builds one per new batch size it meets (ONNX Runtime, TensorRT-ExecutionProvider.md,
    'trt_engine_cache_enable' and 'trt_profile_min_shapes').
    """
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    parameters = accelerator.parameters
    parameters["precision_mode"] = _ACCELERATOR_PRECISION[card.precision]
    parameters["max_workspace_size_bytes"] = str(1 << 30)
    parameters["trt_engine_cache_enable"] = "true"
    parameters["trt_engine_cache_path"] = f"{ENGINE_CACHE_PATH}/{card.name}"
    shape = "x".join(str(size) for size in (card.channels, *card.input_size))
    for key, batch in zip(("min", "opt", "max"), _profile(batching), strict=True):
        parameters[f"trt_profile_{key}_shapes"] = f"{INPUT_NAME}:{batch}x{shape}"
