"""The figures a model card records: how the model was validated, calibrated and is decided on.

Parity gates per runtime, the temperature fit, operating points and the out-of-distribution flag
(:class:`radserve.model_card.ModelCard`). Each record reads and writes the JSON object
``model_card.json`` has always held for it, so cards written before the records existed still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from radserve.errors import ModelCardError

__all__ = [
    "Calibration", "DetectionParity", "GradCamAgreement", "OodFlag", "OperatingPoint", "ParityRecord",
    "ParityReport",
]  # fmt: skip


def _record_values(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``data``'s values of a record's fields; :class:`ModelCardError` naming unknown or missing ones."""
    known = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - known), sorted(required - set(data))
    if unknown or missing:
        problems = [f"unknown fields {unknown}"] * bool(unknown) + [f"lacks {missing}"] * bool(missing)
        raise ModelCardError(f"{what}: {' and '.join(problems)}")
    return dict(data)


@dataclass(frozen=True)
class ParityReport:
    """How a candidate's probabilities compare with the reference's on the same inputs.

    Attributes:
        reference: What the candidate was compared with (``pytorch fp32``, ...).
        samples: Radiographs compared.
        top1_agreement: Fraction of samples whose most probable label is the reference's.
        max_abs_diff: Largest absolute difference of a probability.
        max_rel_diff: Largest difference relative to the reference's probability (floored at 1e-3).
        disagreement_margins: The reference's top-1 minus top-2 probability on each sample whose top-1
            differs: a disagreement on a margin below ``max_abs_diff`` is a near-tie the precision
            cannot resolve, not a wrong network.
        quantization: How an int8 variant was quantized (scheme and calibration); empty otherwise
            (and left out on disk).
    """

    reference: str
    samples: int
    top1_agreement: float
    max_abs_diff: float
    max_rel_diff: float
    disagreement_margins: tuple[float, ...] = ()
    quantization: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the model card's ``parity`` entry)."""
        values = asdict(self) | {"disagreement_margins": list(self.disagreement_margins)}
        return values if self.quantization else {k: v for k, v in values.items() if k != "quantization"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityReport:
        """The report of one ``parity`` entry; :class:`ModelCardError` when incomplete."""
        values = _record_values(cls, data, "parity report")
        values["disagreement_margins"] = tuple(values.get("disagreement_margins", ()))
        return cls(**values)


@dataclass(frozen=True)
class GradCamAgreement:
    """How the Grad-CAM companion's maps correlate with PyTorch autograd Grad-CAM.

    Attributes:
        samples: Radiographs compared.
        min_pearson: The lowest Pearson correlation of a predicted class's map.
        mean_pearson: The mean Pearson correlation.
    """

    samples: int
    min_pearson: float
    mean_pearson: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradCamAgreement:
        """The figures of the ``gradcam_vs_autograd`` entry; :class:`ModelCardError` when incomplete."""
        return cls(**_record_values(cls, data, "Grad-CAM agreement"))


@dataclass(frozen=True)
class DetectionParity:
    """How a detector's boxes compare with the reference's on the same inputs.

    Attributes:
        reference: What the candidate was compared with (``pytorch fp32``).
        samples: Radiographs compared.
        compared: Detections at or above ``min_score``, both sides together.
        matched: Of those, detections matched by one of the other side (same class, IoU).
        min_iou: The lowest IoU of a matched pair.
        max_score_diff: The largest score difference of a matched pair.
        min_score: The score floor below which detections are not compared.
    """

    reference: str
    samples: int
    compared: int
    matched: int
    min_iou: float
    max_score_diff: float
    min_score: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the model card's ``parity`` entry)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectionParity:
        """The report of one detector ``parity`` entry; :class:`ModelCardError` when incomplete."""
        return cls(**_record_values(cls, data, "detection parity"))


GRADCAM_PARITY_KEY = "gradcam_vs_autograd"


@dataclass(frozen=True)
class ParityRecord:
    """The parity gates' figures of a model: one report per runtime and precision.

    On disk one object: each report under its key (a detector's with its ``matched`` count), the
    Grad-CAM figures under ``gradcam_vs_autograd``.

    Attributes:
        runtimes: ``{engine}_{precision}`` (``onnxruntime_fp32``, ``tensorrt_fp16``, ...) to a
            classifier's :class:`ParityReport` against the PyTorch reference.
        detections: ``{engine}_{precision}`` to a detector's :class:`DetectionParity`.
        gradcam: A Grad-CAM companion's agreement with autograd (:class:`GradCamAgreement`); None for
            every other model.
    """

    runtimes: Mapping[str, ParityReport] = field(default_factory=dict)
    detections: Mapping[str, DetectionParity] = field(default_factory=dict)
    gradcam: GradCamAgreement | None = None

    def with_report(self, key: str, report: ParityReport) -> ParityRecord:
        """A copy with ``report`` under ``key`` (added or replaced)."""
        return ParityRecord({**self.runtimes, key: report}, self.detections, self.gradcam)

    def to_dict(self) -> dict[str, Any]:
        """The card's ``parity`` object."""
        reports = {key: report.to_dict() for key, report in self.runtimes.items()}
        reports |= {key: report.to_dict() for key, report in self.detections.items()}
        return reports | ({GRADCAM_PARITY_KEY: asdict(self.gradcam)} if self.gradcam else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParityRecord:
        """The record of a card's ``parity`` object; :class:`ModelCardError` on an incomplete entry."""
        entries = {key: value for key, value in data.items() if key != GRADCAM_PARITY_KEY}
        gradcam = data.get(GRADCAM_PARITY_KEY)
        return cls(
            {key: ParityReport.from_dict(value) for key, value in entries.items() if "matched" not in value},
            {key: DetectionParity.from_dict(value) for key, value in entries.items() if "matched" in value},
            None if gradcam is None else GradCamAgreement.from_dict(gradcam),
        )


@dataclass(frozen=True)
class Calibration:
    """How a model's temperature was fitted (``radserve calibrate --publish``).

    Attributes:
        n: Radiographs with a known label the fit ran on.
        fitted_temperature: The factor fitted on the served probabilities (the new temperature is the
            served one times it).
        ece_before: Expected calibration error of the served probabilities.
        ece_after: Expected calibration error after the fitted factor.
        nll_before: Negative log-likelihood of the served probabilities.
        nll_after: Negative log-likelihood after the fitted factor.
        served_temperature: The temperature of the model the fit ran on.
        applied: Whether the factor went into the published graph (False: ``--keep-temperature``).
    """

    n: int
    fitted_temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    served_temperature: float = 1.0
    applied: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """The record of a card's ``calibration`` object; :class:`ModelCardError` when incomplete."""
        return cls(**_record_values(cls, data, "calibration"))


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold on one label's probability at which the client decides for it.

    Attributes:
        threshold: The decision threshold, in [0, 1].
        rule: The rule it was chosen by (``youden``, ``sensitivity>=X``, ``specificity>=X``); empty
            when set by hand.
        sensitivity: Sensitivity at the threshold on the validation set; None without positives.
        specificity: Specificity at the threshold on the validation set; None without negatives.
        n: Radiographs of the validation set.
        positives: Radiographs of the validation set with this label.
    """

    threshold: float
    rule: str = ""
    sensitivity: float | None = None
    specificity: float | None = None
    n: int = 0
    positives: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OperatingPoint:
        """The point of one ``operating_points`` entry; :class:`ModelCardError` when incomplete."""
        values = _record_values(cls, data, "operating point")
        return cls(**values | {"threshold": float(values["threshold"])})


@dataclass(frozen=True)
class OodFlag:
    """The out-of-distribution flag: a prediction whose score is below ``threshold`` is flagged ``ood``.

    Attributes:
        threshold: The threshold on the score.
        score: The score compared: ``max_softmax`` (the top probability).
        quantile: The quantile of the reference's scores on the validation radiographs the threshold
            sits at; None when set by hand.
        samples: Validation radiographs the quantile was taken over.
        validation: Which radiographs those were (synthetic phantoms, or the ``--samples-from`` folder).
    """

    threshold: float
    score: str = "max_softmax"
    quantile: float | None = None
    samples: int = 0
    validation: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OodFlag:
        """The flag of a card's ``ood`` object; :class:`ModelCardError` when incomplete."""
        values = _record_values(cls, data, "out-of-distribution flag")
        return cls(**values | {"threshold": float(values["threshold"])})
