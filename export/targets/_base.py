"""What every serving target shares: the :class:`ServingTarget` interface and the ONNX file check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, ModelCard, Precision

if TYPE_CHECKING:
    import numpy as np

    from radserve.export.model_config import ServingOptions
    from radserve.export.parity import ParityReport
    from radserve.export.pipeline import ExportRequest, ExportResult, Variant
    from radserve.settings import BatchingDefaults

__all__ = [
    "DEVICES",
    "Candidate",
    "Device",
    "ServingTarget",
    "check_onnx",
    "instance_kind",
    "padded_batch_sizes",
]

Device = Literal["cpu", "gpu"]
DEVICES: tuple[Device, ...] = ("cpu", "gpu")
# one gated variant before publication: precision, card, parity report, model file
Candidate = tuple[Precision, ModelCard, "ParityReport", Path]
_KINDS = {"cpu": pb.ModelInstanceGroup.KIND_CPU, "gpu": pb.ModelInstanceGroup.KIND_GPU}


def instance_kind(device: Device) -> int:
    """The instance group kind of ``device``."""
    return _KINDS[device]


def padded_batch_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch_size``, and it: the fixed sizes a GPU target has graphs for."""
    powers = (1 << exponent for exponent in range(max_batch_size.bit_length()))
    return (*(size for size in powers if size < max_batch_size), max_batch_size)


class ServingTarget:
    """One way of serving a model: its Triton config, artefacts, checks, publication and device.

    A subclass per target (one module each under ``export/targets``); its CPU/GPU variants are the
    ``device`` parameter, one of the class's ``devices`` (the first is the default).
    """

    name: ClassVar[str]
    devices: ClassVar[tuple[Device, ...]]
    model_file: ClassVar[str]
    # model.py copied into each version folder (Python backend targets); None for Triton's backends
    model_source: ClassVar[Path | None] = None

    def __init__(self, device: Device | None = None) -> None:
        if device is not None and device not in self.devices:
            shown = " or ".join(self.devices)
            raise ExportError(f"target {self.name!r} serves on {shown}, not {device!r}")
        self.device: Device = device or self.devices[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={self.device!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServingTarget) and type(other) is type(self) and other.device == self.device

    def __hash__(self) -> int:
        return hash((self.name, self.device))

    @property
    def label(self) -> str:
        """``name``, with ``/device`` where the target has several."""
        return self.name if len(self.devices) == 1 else f"{self.name}/{self.device}"

    @classmethod
    def serves(cls, config: pb.ModelConfig) -> bool:
        """Whether ``config`` was written by this target."""
        raise NotImplementedError

    def configure(self, config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
        """Write the target's backend, instance group and parameters into ``config``."""
        raise NotImplementedError

    def accelerates(self) -> bool:
        """Whether the ONNX Runtime TensorRT accelerator (``--trt-accelerator``) applies."""
        return False

    def max_batch_size(self, batching: BatchingDefaults) -> int:
        """The ``max_batch_size`` an export gets when none is given."""
        return batching.max_batch_size

    def preferred_batch_sizes(self, batching: BatchingDefaults) -> tuple[int, ...]:
        """The dynamic batcher's preferred sizes (each is sent at once, without the queue delay)."""
        return tuple(size for size in batching.preferred_batch_sizes if size <= batching.max_batch_size)

    def warmup_batch_sizes(self, options: ServingOptions) -> tuple[int, ...]:
        """Batch sizes warmed up at load (each size the engine specialises for)."""
        return (1,)

    def int8_scheme(self, options: ServingOptions | None) -> str:
        """int8 activations for this target: ``u8s8`` (ONNX Runtime CPU kernels) or ``s8s8`` (TensorRT)."""
        return "u8s8"

    def work_folder(self, request: ExportRequest) -> Path | None:
        """Where the gated ONNX files stay after the export; None: a temporary folder."""
        return request.work_dir

    def companion(self) -> ServingTarget:
        """The target a Grad-CAM companion ONNX model is published on beside this one."""
        return self

    def check_version(
        self, folder: Path, config: pb.ModelConfig, card: ModelCard | None, where: str, problems: list[str]
    ) -> None:
        """Append to ``problems`` what is wrong with version ``folder``'s artefacts."""
        raise NotImplementedError

    def check_image(self, folder: Path, card: ModelCard | None, image: str) -> tuple[list[str], list[str]]:
        """(problems, notes) of serving version ``folder`` with the NGC ``image``; none by default."""
        return [], []

    def export(self, request: ExportRequest) -> ExportResult:
        """Export ``request``'s checkpoint to this target (ONNX, gated per precision)."""
        from radserve.export.pipeline import export_onnx

        return export_onnx(request, self)

    def publish_candidates(
        self,
        request: ExportRequest,
        candidates: Sequence[Candidate],
        images: np.ndarray,
        reference: np.ndarray,
        work: Path,
    ) -> list[Variant]:
        """Publish the gated variants; the default publishes each ONNX file as it is."""
        from radserve.export.pipeline import Variant
        from radserve.export.repository import publish

        return [
            Variant(
                precision,
                card,
                report,
                publish(
                    request.repository, card, path, self, request.options, keep_versions=request.keep_versions
                ),
            )
            for precision, card, report, path in candidates
        ]


def check_onnx(
    path: Path,
    where: str,
    config: pb.ModelConfig,
    problems: list[str],
) -> None:
    """``path``'s graph input/output names, types and shapes match ``config`` (dynamic batch)."""
    import onnx

    if not path.is_file():
        problems.append(f"{where}: no {path.name}")
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and others for a damaged file
        problems.append(f"{where}: {path.name} is not a readable ONNX model: {error}")
        return
    wire_shape = [int(size) for size in config.input[0].dims]
    classes = int(config.output[0].dims[0])
    output_names = [output.name for output in config.output]
    expected = [(model.graph.input, INPUT_NAME, onnx.TensorProto.UINT8, [None, *wire_shape])]
    expected.append((model.graph.output[:1], OUTPUT_NAME, onnx.TensorProto.FLOAT, [None, classes]))
    names = [tensor.name for tensor in model.graph.output]
    if names != output_names:
        problems.append(f"{where}: {path.name} outputs {names}, the config expects {output_names}")
        return
    for tensors, name, elem_type, shape in expected:
        names = [tensor.name for tensor in tensors]
        if names != [name]:
            problems.append(f"{where}: {path.name} has {names}, the config expects [{name!r}]")
            continue
        tensor_type = tensors[0].type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
        if tensor_type.elem_type != elem_type:
            actual = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            wanted = onnx.TensorProto.DataType.Name(elem_type)
            problems.append(f"{where}: {path.name} {name} is {actual}, the config expects {wanted}")
        if dims != shape:
            shown = ["batch" if d is None else d for d in shape]
            problems.append(
                f"{where}: {path.name} {name} has shape {dims}, the config expects {shown} (dynamic batch)"
            )
