"""The one description of a served model, written by export and read by everything else.

Export writes it beside the model (``model_card.json``) and into the model's Triton config as the
parameter ``radserve.model_card``, so a client learns the input size, resize mode, labels and input
contract (what the model accepts) from the server over gRPC and never needs flags for them.
Cards written before a field existed stay readable: the field takes its default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from radserve.card_figures import (
    Calibration,
    DetectionParity,
    GradCamAgreement,
    OodFlag,
    OperatingPoint,
    ParityRecord,
    ParityReport,
)
from radserve.card_records import CpuEngineChoice, EngineRecord, InputContract, RenderingPolicy
from radserve.errors import ModelCardError
from radserve.settings import SETTINGS

# the card's records are imported from here by most callers
__all__ = [
    "Calibration", "CpuEngineChoice", "DetectionParity", "EngineRecord", "GradCamAgreement", "InputContract",
    "ModelCard", "OodFlag", "OperatingPoint", "ParityRecord", "ParityReport", "Precision", "RenderingPolicy",
    "ResizeMode", "Task", "detector_name", "model_versions",
]  # fmt: skip

ResizeMode = Literal["letterbox", "stretch"]
Task = Literal["classification", "detection"]
Precision = Literal["fp32", "fp16", "int8", "bf16"]
CpuEngine = Literal["onnxruntime", "openvino"]

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
# the embedded model's CPU engine and, for OpenVINO, its inference precision (f32 or bf16)
CPU_ENGINE_PARAMETER = "cpu_engine"
INFERENCE_PRECISION_PARAMETER = "inference_precision"
# radiographs per engine run: the embedded model runs a larger dynamic batch in slices of this size
ENGINE_BATCH_PARAMETER = "engine_batch_size"

# a card's records as JSON objects hold them: an empty object for an optional record reads as None
_RECORDS: dict[str, Callable[[dict[str, Any]], object]] = {
    "accepts": InputContract.from_dict,
    "rendering": RenderingPolicy.from_dict,
    "engine": EngineRecord.from_dict,
    "cpu_engine_choice": CpuEngineChoice.from_dict,
    "parity": ParityRecord.from_dict,
    "calibration": lambda data: Calibration.from_dict(data) if data else None,
    "ood": lambda data: OodFlag.from_dict(data) if data else None,
}


def detector_name(classifier: str) -> str:
    """The name of the detector served next to a classifier (system outputs "boxes").

    Args:
        classifier: The classifier's model name.

    Returns:
        The detector's model name.
    """
    return f"{classifier}{DETECTOR_SUFFIX}"


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

    Attributes:
        name: The served model's name.
        architecture: The network (``resnet18``, ``efficientnet_b0``, ...; ``torchscript`` or
            ``torch.export`` for programs exported with their metadata on the command line).
        labels: The class labels, in output order.
        input_size: The wire image's (height, width).
        resize: How a radiograph is fitted to ``input_size``: ``letterbox`` (aspect kept, padded) or
            ``stretch``.
        mean: Normalization mean on 0..1 RGB, applied inside the graph.
        std: Normalization standard deviation on 0..1 RGB, applied inside the graph.
        temperature: The logits are divided by it before the softmax (``radserve calibrate``).
        operating_points: Label to its :class:`OperatingPoint` (``threshold``, ``rule``,
            ``sensitivity``, ``specificity``, ``n``): chosen on a validation set (``radserve calibrate
            --threshold``), applied by the client (each row's ``decision``).
        calibration: How ``temperature`` was fitted (:class:`Calibration`); None (``{}`` on disk)
            when it was not.
        precision: ``fp32``, ``fp16``, ``int8`` or ``bf16`` (OpenVINO's bf16 inference precision on a
            CPU that has it, from the fp32 graph): the variant's precision.
        checkpoint_sha256: The sha256 of the checkpoint it was exported from.
        parity: The parity gates' figures per runtime and precision (:class:`ParityRecord`: samples,
            top-1 agreement, max abs and rel difference; a Grad-CAM companion's map agreement).
        tool_versions: Versions of the tools that exported it (torch, onnx, onnxruntime, ...).
        accepts: The input contract: the DICOM instances the model answers for.
        ood: The out-of-distribution flag (:class:`OodFlag`: ``score`` ``max_softmax`` below
            ``threshold``), chosen at export; None (``{}`` on disk) for none.
        system: The served system whose contract it was checked against; empty for none.
        channels: UINT8 planes per wire input: 1 for a radiograph, more for an MRI slice stack.
        network_input_size: The smaller size the network runs at behind an integer average pooling
            of the wire image; None when it runs at ``input_size``.
        task: ``classification`` or ``detection`` (a detector: boxes, scores and classes, no
            probabilities).
        max_detections: Boxes per image a detector answers (padded with score 0); 0 for classifiers.
        rendering: How the client renders stored values to the wire image (:class:`RenderingPolicy`):
            as the training data was rendered.
        cpu_engine: The engine the embedded target runs the ONNX graph with: ``onnxruntime``, or
            ``openvino`` (OpenVINO's CPU plugin; every ``bf16`` variant), gated against PyTorch with it.
        cpu_engine_choice: Why it runs ``cpu_engine`` when ``radserve tune --apply`` chose it
            (:class:`CpuEngineChoice`: the measured ratio); None when export's engine was kept.
        engine: The TensorRT plan a ``tensorrt`` model serves (:class:`EngineRecord`); None for every
            other target.
    """

    name: str
    architecture: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    resize: ResizeMode = "stretch"
    mean: tuple[float, float, float] = SETTINGS.export.mean
    std: tuple[float, float, float] = SETTINGS.export.std
    temperature: float = 1.0
    operating_points: Mapping[str, OperatingPoint] = field(default_factory=dict)
    calibration: Calibration | None = None
    precision: Precision = "fp32"
    cpu_engine: CpuEngine = "onnxruntime"
    checkpoint_sha256: str = ""
    parity: ParityRecord = field(default_factory=ParityRecord)
    tool_versions: dict[str, str] = field(default_factory=dict)
    accepts: InputContract = field(default_factory=InputContract)
    ood: OodFlag | None = None
    system: str = ""
    channels: int = 1
    network_input_size: tuple[int, int] | None = None
    task: Task = "classification"
    max_detections: int = 0
    rendering: RenderingPolicy = field(default_factory=RenderingPolicy)
    engine: EngineRecord | None = None
    cpu_engine_choice: CpuEngineChoice | None = None

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
            if not 0.0 <= point.threshold <= 1.0:
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
        """The number of labels (the model's output width)."""
        return len(self.labels)

    @property
    def ood_threshold(self) -> float | None:
        """Predictions whose top probability is below this are flagged out of distribution."""
        return None if self.ood is None else self.ood.threshold

    def decide(self, probabilities: dict[str, float]) -> tuple[str, float | None]:
        """(decision, threshold used) for one radiograph under the card's operating points.

        The decision is the label with the highest probability among those at or above their
        threshold, else ``negative`` with the threshold of the most probable label that has an
        operating point.

        Args:
            probabilities: The row's probability of every label.

        Returns:
            The decision and the threshold used; ``("", None)`` without operating points.
        """
        if not self.operating_points:
            return "", None
        ranked = sorted(self.operating_points, key=lambda label: probabilities[label], reverse=True)
        for label in ranked:
            threshold = self.operating_points[label].threshold
            if probabilities[label] >= threshold:
                return label, threshold
        return NEGATIVE_DECISION, self.operating_points[ranked[0]].threshold

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed.

        Args:
            **changes: Field names and their new values.

        Returns:
            The new card (validated like any card).

        Raises:
            ModelCardError: The changed card is inconsistent.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (every field, by name; each record as the object it writes)."""
        values = asdict(self) | {
            "operating_points": {label: asdict(point) for label, point in self.operating_points.items()},
            "calibration": {} if self.calibration is None else asdict(self.calibration),
            "parity": self.parity.to_dict(),
            "ood": {} if self.ood is None else asdict(self.ood),
        }
        if self.cpu_engine_choice is None:  # written only once `radserve tune --apply` chose an engine
            del values["cpu_engine_choice"]
        return values

    def to_json(self) -> str:
        """The card as ``model_card.json`` holds it (sorted keys, indented)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """The card of a JSON object; unknown keys are ignored, missing optional ones take defaults.

        Args:
            data: The card's JSON object.

        Returns:
            The card.

        Raises:
            ModelCardError: A required field is missing or the card is inconsistent.
        """
        known = {f.name for f in fields(cls)}
        missing = {"name", "architecture", "labels", "input_size"} - data.keys()
        if missing:
            raise ModelCardError(f"model card lacks {sorted(missing)}")
        values = {key: value for key, value in data.items() if key in known}
        for key in ("labels", "input_size", "mean", "std", "network_input_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        for key, record in _RECORDS.items():
            if isinstance(values.get(key), dict):
                values[key] = record(values[key])
        if isinstance(values.get("operating_points"), dict):
            values["operating_points"] = {
                label: OperatingPoint.from_dict(point) for label, point in values["operating_points"].items()
            }
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """The card of a ``model_card.json`` text.

        Args:
            text: The JSON text.

        Returns:
            The card.

        Raises:
            ModelCardError: The text is not a JSON object, or not a valid card.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelCardError(f"model card is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise ModelCardError("model card is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """Read ``model_card.json`` from a file or a model version folder.

        Args:
            path: The file, or the folder that holds it.

        Returns:
            The card.

        Raises:
            ModelCardError: The file cannot be read or is not a valid card.
        """
        path = path / MODEL_CARD_FILE if path.is_dir() else path
        try:
            return cls.from_json(path.read_text())
        except OSError as error:
            raise ModelCardError(f"cannot read model card {path}: {error.strerror}") from None

    @classmethod
    def from_repository(cls, repository: Path, name: str) -> ModelCard:
        """The card of the newest version of a model in a Triton model repository.

        Args:
            repository: The repository folder.
            name: The model's name (its folder).

        Returns:
            The card of its highest numbered version.

        Raises:
            ModelCardError: The model has no version, or its card cannot be read.
        """
        numbered = model_versions(repository / name)
        if not numbered:
            raise ModelCardError(f"no version of model {name!r} in {repository}")
        return cls.read(repository / name / str(numbered[-1]))

    def write(self, folder: Path) -> Path:
        """Write the card as ``model_card.json`` into a folder.

        Args:
            folder: The model version folder.

        Returns:
            The file written.
        """
        path = folder / MODEL_CARD_FILE
        path.write_text(self.to_json() + "\n")
        return path


def model_versions(model_dir: Path) -> list[int]:
    """The numbered version folders of a model in a Triton repository.

    Args:
        model_dir: The model's folder.

    Returns:
        The version numbers, ascending; empty when the folder does not exist.
    """
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit())
