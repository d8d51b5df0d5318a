"""``embedded-gpu``: the PyTorch network in Triton's Python backend, one CUDA graph per padded size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tritonclient.grpc import model_config_pb2 as pb

from radserve.export.targets._base import Device, ServingTarget, padded_batch_sizes
from radserve.model_card import ModelCard

if TYPE_CHECKING:
    from radserve.export.model_config import ServingOptions
    from radserve.export.pipeline import ExportRequest, ExportResult
    from radserve.settings import BatchingDefaults

__all__ = ["PADDED_SIZES_PARAMETER", "WEIGHTS_FILE_PARAMETER", "EmbeddedGpuTarget"]

# the network's state_dict; model.py rebuilds the architecture named in the model card
WEIGHTS_FILE_PARAMETER = "weights_filename"
PADDED_SIZES_PARAMETER = "padded_batch_sizes"


class EmbeddedGpuTarget(ServingTarget):
    """No ONNX: ``weights.pt`` and ``model.py`` (export/gpu_model.py), gated on the exporting device."""

    name: ClassVar[str] = "embedded-gpu"
    devices: ClassVar[tuple[Device, ...]] = ("gpu",)
    model_file: ClassVar[str] = "weights.pt"
    model_source: ClassVar[Path | None] = Path(__file__).parent.parent / "gpu_model.py"

    @classmethod
    def serves(cls, config: pb.ModelConfig) -> bool:
        return config.backend == "python" and WEIGHTS_FILE_PARAMETER in config.parameters

    def configure(self, config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
        batching = options.batching
        config.backend = "python"
        config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_GPU, count=batching.gpu_python_instances)
        # fixed shapes (docs/design.md, 'Wire format'): model.py pads each batch to one of these sizes
        sizes = padded_batch_sizes(batching.max_batch_size)
        config.parameters[PADDED_SIZES_PARAMETER].string_value = ",".join(map(str, sizes))
        config.parameters[WEIGHTS_FILE_PARAMETER].string_value = self.model_file

    def max_batch_size(self, batching: BatchingDefaults) -> int:
        return batching.gpu_max_batch_size

    def preferred_batch_sizes(self, batching: BatchingDefaults) -> tuple[int, ...]:
        # The padded sizes above 1: a preferred size is sent at once (Triton's batcher.md, 'Preferred
        # Batch Sizes'), so with 1 among them a lone request never waits and batches stay small.
        return padded_batch_sizes(batching.max_batch_size)[1:] or (1,)

    def export(self, request: ExportRequest) -> ExportResult:
        from radserve.export.gpu_export import export_embedded_gpu

        return export_embedded_gpu(request)

    def check_version(
        self, folder: Path, config: pb.ModelConfig, card: ModelCard | None, where: str, problems: list[str]
    ) -> None:
        if not (folder / "model.py").is_file():
            problems.append(f"{where}: no model.py (the Python backend's model)")
        _check_weights(folder / config.parameters[WEIGHTS_FILE_PARAMETER].string_value, where, card, problems)


def _check_weights(path: Path, where: str, card: ModelCard | None, problems: list[str]) -> None:
    """The weights load as plain tensors and fit the card's architecture and labels."""
    if not path.is_file():
        problems.append(f"{where}: no {path.name}")
        return
    if card is None:
        return
    import torch

    from radserve.export.architectures import build_model

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        build_model(card.architecture, card.num_classes).load_state_dict(state_dict)
    except Exception as error:  # unpickling, unknown architecture, shapes: all end in one line
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        problems.append(f"{where}: {path.name} does not load into {card.architecture}: {first}")
