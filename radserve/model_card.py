"""The one description of a served model, written by export and read by everything else.

Export writes it beside the model (``model_card.json``) and into the model's Triton config as the
parameter ``radserve.model_card``, so a client learns the input size, resize mode, labels and input
contract (what the model accepts) from the server over gRPC and never needs flags for them.
Cards written before a field existed stay readable: the field takes its default.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from radserve.errors import ModelCardError
from radserve.settings import SETTINGS

ResizeMode = Literal["letterbox", "stretch"]
Task = Literal["classification", "detection"]
Precision = Literal["fp32", "fp16", "int8"]

MODEL_CARD_FILE = "model_card.json"
MODEL_CARD_PARAMETER = "radserve.model_card"
# The version the config's card describes (written by publication; clients pin their requests to it).
MODEL_VERSION_PARAMETER = "radserve.model_version"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# The Grad-CAM companion of a model (published by ``radserve export --gradcam``): same wire input,
# outputs ``probabilities`` and ``gradcam`` [C, h, w] (one map per class at the last conv block).
GRADCAM_OUTPUT = "gradcam"
GRADCAM_SUFFIX = "_gradcam"
# The detector served next to a classifier NAME (system outputs "boxes"), published as NAME_detector by
# ``radserve export`` of a detector checkpoint: same wire input, outputs boxes [K, 4] (wire pixel
# edges x0 y0 x1 y1), scores [K] (padded with 0) and classes [K] (label indices), K = max_detections.
DETECTOR_SUFFIX = "_detector"
BOXES_OUTPUT = "boxes"
SCORES_OUTPUT = "scores"
CLASSES_OUTPUT = "classes"
DETECTION_OUTPUTS = (BOXES_OUTPUT, SCORES_OUTPUT, CLASSES_OUTPUT)
# The decision of a row whose probabilities reach no operating point's threshold.
NEGATIVE_DECISION = "negative"
# Config parameters of the embedded target: instance count and ONNX Runtime threads are set by the
# serving host when ``radserve serve`` starts (radserve.server_config.serving_view).
HOST_SIZED_PARAMETER = "radserve.host_sized"
ONNXRUNTIME_THREADS_PARAMETER = "onnxruntime_threads"


def detector_name(classifier: str) -> str:
    """The detector served next to classifier ``classifier`` (system outputs "boxes")."""
    return f"{classifier}{DETECTOR_SUFFIX}"


@dataclass(frozen=True)
class InputContract:
    """The DICOM instances a model answers for, checked on the header before any pixel is decoded.

    Each tuple lists accepted values of one attribute; an empty tuple accepts any value (and a
    missing attribute). DX "For Processing" images (raw detector data) are refused unless
    ``for_processing``.
    """

    modalities: tuple[str, ...] = SETTINGS.contract.modalities
    sop_classes: tuple[str, ...] = SETTINGS.contract.sop_classes
    photometric: tuple[str, ...] = SETTINGS.contract.photometric
    body_parts: tuple[str, ...] = ()
    view_positions: tuple[str, ...] = ()
    for_processing: bool = False

    @classmethod
    def any(cls) -> InputContract:
        """The contract of ``--accept-any``: every instance, For Processing included."""
        return cls((), (), (), (), (), for_processing=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputContract:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelCardError(f"input contract has unknown fields {unknown}")
        lists: dict[str, Any] = {key: tuple(value) for key, value in data.items() if key != "for_processing"}
        return cls(**lists, for_processing=bool(data.get("for_processing", False)))


@dataclass(frozen=True)
class ModelCard:
    """What a model is, what it expects on the wire and how it was validated.

    The wire input is ``channels`` UINT8 planes ``[channels, H, W]`` per input: one grey channel per
    radiograph (replicated to RGB inside the graph), or a stack of MRI slices (``system``
    ``vertebral-fracture-mri``). Normalization (``mean``/``std`` on 0..1 pixels; averaged to one
    value for a multi-channel stack), channel replication and the softmax (after division by
    ``temperature``) happen inside the model graph. ``network_input_size``, when set, is the smaller
    size the network runs at behind an average pooling of the wire image by an integer factor (a demo
    trained at reduced size served at its study's size); ``system`` names the contract it was checked
    against (:mod:`radserve.systems`).
    """

    name: str
    architecture: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    resize: ResizeMode = "stretch"
    mean: tuple[float, float, float] = SETTINGS.export.mean
    std: tuple[float, float, float] = SETTINGS.export.std
    temperature: float = 1.0
    # label -> {threshold, rule, sensitivity, specificity, n}: chosen on a validation set
    # (``radserve calibrate --threshold``), applied by the client (each row's ``decision``).
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    # how ``temperature`` was fitted: {n, ece_before, ece_after, nll_before, nll_after, ...}
    calibration: dict[str, Any] = field(default_factory=dict)
    precision: Precision = "fp32"
    checkpoint_sha256: str = ""
    parity: dict[str, Any] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    accepts: InputContract = field(default_factory=InputContract)
    # out-of-distribution flag: {"score": "max_softmax", "threshold": t, ...} chosen at export
    ood: dict[str, Any] = field(default_factory=dict)
    system: str = ""
    channels: int = 1
    network_input_size: tuple[int, int] | None = None
    # "detection": a detector (DETECTION_OUTPUTS, at most max_detections boxes per image), no probabilities
    task: Task = "classification"
    max_detections: int = 0

    def __post_init__(self) -> None:
        if not self.labels:
            raise ModelCardError(f"model {self.name!r}: no labels")
        if len(set(self.labels)) != len(self.labels):
            raise ModelCardError(f"model {self.name!r}: duplicate labels {list(self.labels)}")
        height, width = self.input_size
        if not (16 <= height <= 4096 and 16 <= width <= 4096):
            raise ModelCardError(f"model {self.name!r}: input size {self.input_size} out of range")
        if self.resize not in ("letterbox", "stretch"):
            raise ModelCardError(f"model {self.name!r}: resize must be letterbox or stretch")
        if self.temperature <= 0:
            raise ModelCardError(f"model {self.name!r}: temperature must be > 0")
        for label, point in self.operating_points.items():
            if label not in self.labels:
                raise ModelCardError(f"model {self.name!r}: operating point for unknown label {label!r}")
            if not 0.0 <= float(point.get("threshold", -1)) <= 1.0:
                raise ModelCardError(
                    f"model {self.name!r}: operating point of {label!r} needs a threshold in [0, 1]"
                )
        if self.channels < 1:
            raise ModelCardError(f"model {self.name!r}: channels must be >= 1")
        if self.task not in ("classification", "detection"):
            raise ModelCardError(f"model {self.name!r}: task must be classification or detection")
        if (self.task == "detection") != (self.max_detections > 0):
            raise ModelCardError(
                f"model {self.name!r}: a detector, and only a detector, has max_detections > 0"
            )
        if self.pooling == 0:
            raise ModelCardError(
                f"model {self.name!r}: network input size {self.network_input_size} is not the input size "
                f"{self.input_size} divided by one integer"
            )

    @property
    def pooling(self) -> int:
        """The integer factor the graph averages the wire image down by (1: none; 0: inconsistent)."""
        if self.network_input_size is None:
            return 1
        factors = {
            size // net if net and size % net == 0 else 0
            for size, net in zip(self.input_size, self.network_input_size, strict=True)
        }
        return factors.pop() if len(factors) == 1 else 0

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def ood_threshold(self) -> float | None:
        """Predictions whose top probability is below this are flagged out of distribution."""
        threshold = self.ood.get("threshold")
        return None if threshold is None else float(threshold)

    def decide(self, probabilities: dict[str, float]) -> tuple[str, float | None]:
        """(decision, threshold used) for one radiograph under the card's operating points.

        The decision is the label with the highest probability among those at or above their
        threshold, else ``negative`` with the threshold of the most probable label that has an
        operating point. Without operating points: ``("", None)``.
        """
        if not self.operating_points:
            return "", None
        ranked = sorted(self.operating_points, key=lambda label: probabilities[label], reverse=True)
        for label in ranked:
            threshold = float(self.operating_points[label]["threshold"])
            if probabilities[label] >= threshold:
                return label, threshold
        return NEGATIVE_DECISION, float(self.operating_points[ranked[0]]["threshold"])

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)}
        missing = {"name", "architecture", "labels", "input_size"} - data.keys()
        if missing:
            raise ModelCardError(f"model card lacks {sorted(missing)}")
        values = {key: value for key, value in data.items() if key in known}
        for key in ("labels", "input_size", "mean", "std", "network_input_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if isinstance(values.get("accepts"), dict):
            values["accepts"] = InputContract.from_dict(values["accepts"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelCardError(f"model card is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ModelCardError("model card is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """Read ``model_card.json`` from a file or a model folder."""
        path = path / MODEL_CARD_FILE if path.is_dir() else path
        try:
            return cls.from_json(path.read_text())
        except OSError as error:
            raise ModelCardError(f"cannot read model card {path}: {error.strerror}") from None

    @classmethod
    def from_repository(cls, repository: Path, name: str) -> ModelCard:
        """The card of the newest version of model ``name`` in a Triton model repository."""
        numbered = model_versions(repository / name)
        if not numbered:
            raise ModelCardError(f"no version of model {name!r} in {repository}")
        return cls.read(repository / name / str(numbered[-1]))

    def write(self, folder: Path) -> Path:
        path = folder / MODEL_CARD_FILE
        path.write_text(self.to_json() + "\n")
        return path


def model_versions(model_dir: Path) -> list[int]:
    """The numbered version folders of a model in a Triton repository, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit())
