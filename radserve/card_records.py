"""The records a model card holds besides its plain fields.

What the model accepts, how the client renders a radiograph for it, the TensorRT plan it serves and
why it runs its CPU engine (:class:`radserve.model_card.ModelCard`); its figures are in
:mod:`radserve.card_figures`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from radserve.errors import ModelCardError
from radserve.settings import SETTINGS

__all__ = [
    "CpuEngineChoice", "EngineRecord", "InputContract", "LutShapeConflict", "RenderingPolicy", "VoiFirst",
    "VoiLutDepth",
]  # fmt: skip

LutShapeConflict = Literal["photometric", "refuse"]
VoiFirst = Literal["window", "lut"]
VoiLutDepth = Literal["data", "descriptor"]


@dataclass(frozen=True)
class InputContract:
    """The DICOM instances a model answers for, checked on the header before any pixel is decoded.

    Each tuple lists accepted values of one attribute; an empty tuple accepts any value (and a
    missing attribute). Body parts and view positions are matched against Body Part Examined and View
    Position, or the coded Anatomic Region and View Code Sequences where those are empty.

    Attributes:
        modalities: Accepted Modality (0008,0060) values.
        sop_classes: Accepted SOP Class UIDs.
        photometric: Accepted Photometric Interpretation values.
        body_parts: Accepted Body Part Examined values (or coded Anatomic Region meanings); empty: any.
        view_positions: Accepted View Position values (or coded View Code meanings); empty: any.
        for_processing: Whether DX "For Processing" images (raw detector data) are accepted.
        refused_image_types: Image Type values refused (a LOCALIZER scout, a SECONDARY image derived
            after the fact).
        refuse_burned_in_annotation: Refuse an instance whose Burned In Annotation is YES.
        refuse_lossy_compression: Refuse an instance whose Lossy Image Compression is 01.
    """

    modalities: tuple[str, ...] = SETTINGS.contract.modalities
    sop_classes: tuple[str, ...] = SETTINGS.contract.sop_classes
    photometric: tuple[str, ...] = SETTINGS.contract.photometric
    body_parts: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    for_processing: bool = False
    refused_image_types: tuple[str, ...] = ("LOCALIZER", "SECONDARY")
    refuse_burned_in_annotation: bool = False
    refuse_lossy_compression: bool = False

    @classmethod
    def any(cls) -> InputContract:
        """The contract of ``--accept-any``: every instance, For Processing included."""
        return cls((), (), (), (), (), for_processing=True, refused_image_types=())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        """The contract of a card's ``accepts`` object.

        Args:
            data: The JSON object, lists for the tuples.

        Returns:
            The contract.

        Raises:
            ModelCardError: The object has fields a contract does not know.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelCardError(f"input contract has unknown fields {unknown}")
        values: dict[str, Any] = {
            key: value if isinstance(value, bool) else tuple(value) for key, value in data.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class RenderingPolicy:
    """How the client renders stored values to the wire image: the way the training data was rendered.

    The default is radserve's own display pipeline, with which the demos were trained (docs/design.md,
    "Display pipeline"). ``presentation_lut_conflict``: when Presentation LUT Shape contradicts the
    Photometric Interpretation (INVERSE on MONOCHROME2, IDENTITY on MONOCHROME1), ``photometric``
    renders by the Photometric Interpretation and notes it in the row, ``refuse`` refuses the instance.
    ``voi_first``: which VOI transform wins when a data set has both a window and a VOI LUT Sequence
    (``lut`` as pydicom's ``apply_voi_lut``). ``voi_lut_depth``: ``data`` scales a VOI LUT by the bit
    depth its entries need when they do not fit the depth its descriptor declares (dcmtk's
    ``--ignore-vlut-depth``); ``descriptor`` always by the declared depth.
    """

    presentation_lut_conflict: LutShapeConflict = "photometric"
    voi_first: VoiFirst = "window"
    voi_lut_depth: VoiLutDepth = "data"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("presentation_lut_conflict", ("photometric", "refuse")),
            ("voi_first", ("window", "lut")),
            ("voi_lut_depth", ("data", "descriptor")),
        ):
            if getattr(self, name) not in allowed:
                raise ModelCardError(f"rendering policy: {name} must be one of {', '.join(allowed)}")

    def to_dict(self) -> dict[str, str]:
        """The card's ``rendering`` object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderingPolicy:
        """The policy of a card's ``rendering`` object; fields it lacks take their defaults."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ModelCardError(f"rendering policy has unknown fields {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class EngineRecord:
    """The TensorRT plan of a ``tensorrt`` model: what an image and a GPU must provide to load it.

    ``hardware_compatible``: built for every GPU from Ampere (compute capability 8.0) on;
    ``version_compatible``: loads on later TensorRT releases, with the server's
    ``--backend-config=tensorrt,version-compatible=true`` (docs/how-to/tensorrt-ngc.md).
    """

    tensorrt_version: str
    compute_capability: tuple[int, int]
    gpu_name: str = ""
    hardware_compatible: bool = False
    version_compatible: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineRecord:
        """The record of a card's ``engine`` object; :class:`ModelCardError` when incomplete."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown or not {"tensorrt_version", "compute_capability"} <= data.keys():
            raise ModelCardError(
                f"engine record needs tensorrt_version and compute_capability, got {sorted(data)}"
            )
        capability = tuple(data["compute_capability"])
        return cls(**{**data, "compute_capability": (int(capability[0]), int(capability[1]))})


@dataclass(frozen=True)
class CpuEngineChoice:
    """Why the embedded target runs the card's ``cpu_engine``: ``radserve tune``'s raw measurement.

    Written by ``radserve tune --apply`` (docs/how-to/serve-cpu.md, "Which CPU engine").

    Attributes:
        engine: The engine chosen (``onnxruntime`` or ``openvino``).
        replaced: The engine it replaced.
        ratio: The chosen engine's raw img/s over the replaced one's, measured in the same run.
        images_per_second: Each engine's raw img/s (median of the runs at its best layout and batch).
        gate: The chosen engine's top-1 agreement and max abs difference with the replaced one.
        host: The processor and core count measured on.
        measured: When (UTC, ISO 8601).
    """

    engine: str
    replaced: str
    ratio: float
    images_per_second: dict[str, float]
    gate: dict[str, Any]
    host: str = ""
    measured: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CpuEngineChoice:
        """The record of a card's ``cpu_engine_choice`` object; :class:`ModelCardError` when incomplete."""
        required = {"engine", "replaced", "ratio", "images_per_second", "gate"}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown or not required <= data.keys():
            raise ModelCardError(f"cpu engine choice needs {sorted(required)}, got {sorted(data)}")
        return cls(**data)
