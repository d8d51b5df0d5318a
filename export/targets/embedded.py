"""``embedded``: ONNX Runtime (or OpenVINO's CPU plugin) inside Triton's Python backend, on the CPU,
sized by the serving host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tritonclient.grpc import model_config_pb2 as pb

from radserve.export.targets._base import Device, ServingTarget, check_onnx
from radserve.export.targets.embedded_gpu import WEIGHTS_FILE_PARAMETER
from radserve.model_card import (
    CPU_ENGINE_PARAMETER,
    ENGINE_BATCH_PARAMETER,
    HOST_SIZED_PARAMETER,
    INFERENCE_PRECISION_PARAMETER,
    ONNXRUNTIME_THREADS_PARAMETER,
    ModelCard,
)

if TYPE_CHECKING:
    from radserve.export.model_config import ServingOptions

__all__ = ["ONNX_FILE_PARAMETER", "EmbeddedTarget", "set_cpu_engine"]

ONNX_FILE_PARAMETER = "onnx_model_filename"


def set_cpu_engine(config: pb.ModelConfig, card: ModelCard) -> None:
    """The config's engine parameters: ONNX Runtime, or OpenVINO's CPU plugin at f32 or bf16 (the
    card's ``cpu_engine`` and precision)."""
    config.parameters[CPU_ENGINE_PARAMETER].string_value = card.cpu_engine
    precision = "bf16" if card.precision == "bf16" else "f32"
    config.parameters[INFERENCE_PRECISION_PARAMETER].string_value = precision


class EmbeddedTarget(ServingTarget):
    """The default target: any tritonserver with the Python backend serves it, no GPU needed."""

    name: ClassVar[str] = "embedded"
    devices: ClassVar[tuple[Device, ...]] = ("cpu",)
    model_file: ClassVar[str] = "model.onnx"
    model_source: ClassVar[Path | None] = Path(__file__).parent.parent / "embedded_model.py"

    @classmethod
    def serves(cls, config: pb.ModelConfig) -> bool:
        return config.backend == "python" and WEIGHTS_FILE_PARAMETER not in config.parameters

    def configure(self, config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
        config.backend = "python"
        # Sized by the serving host when `radserve serve` starts (HOST_SIZED_PARAMETER); 1 instance with
        # ONNX Runtime's default threads (all cores) for a tritonserver started by other means.
        config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
        config.parameters[HOST_SIZED_PARAMETER].string_value = "true"
        config.parameters[ONNXRUNTIME_THREADS_PARAMETER].string_value = "0"
        config.parameters[ONNX_FILE_PARAMETER].string_value = self.model_file
        # the batcher merges requests; the engine runs them in slices (docs/how-to/benchmarks.md,
        # "The served path")
        config.parameters[ENGINE_BATCH_PARAMETER].string_value = str(options.batching.engine_batch_size)
        set_cpu_engine(config, card)

    def check_version(
        self, folder: Path, config: pb.ModelConfig, card: ModelCard | None, where: str, problems: list[str]
    ) -> None:
        if not (folder / "model.py").is_file():
            problems.append(f"{where}: no model.py (the Python backend's model)")
        onnx_name = config.parameters[ONNX_FILE_PARAMETER].string_value or self.model_file
        check_onnx(folder / onnx_name, where, config, problems)
