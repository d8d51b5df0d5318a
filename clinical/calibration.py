"""Temperature scaling from served probabilities, and operating thresholds chosen by rule.

The served model answers ``p = softmax(z / T0)``; ``log p`` equals ``z / T0`` up to a per-row
constant, so ``softmax(log p / T)`` is exactly the model with temperature ``T0 * T``: one
temperature is fitted on the served probabilities (minimum negative log-likelihood) and the model is
re-published with ``T0 * T`` inside its graph. Probabilities in result rows are rounded to 1e-6;
zeros are floored at half that step before the logarithm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn import metrics

from radserve.clinical.scores import expected_calibration_error, operating_point_figures
from radserve.errors import ClinicalError
from radserve.model_card import Calibration, OperatingPoint
from radserve.settings import SETTINGS

_FLOOR = 5e-7  # half the rounding step of the probabilities in result rows
_LOG_TEMPERATURE_BOUNDS = (math.log(0.02), math.log(50.0))
_SPEC_PATTERN = re.compile(r"^(?:(?P<label>[^=<>]+)=)?(?P<rule>.+)$")
RULE_PATTERN = re.compile(r"^(youden|(sensitivity|specificity)>=(0?\.\d+|1(\.0*)?))$")


def scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / temperature)``: the probabilities of the model at ``T0 * temperature``."""
    logits = np.log(np.maximum(probabilities, _FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def check_set(y_true: np.ndarray, what: str, minimum: int = SETTINGS.clinical.min_calibration_set) -> None:
    """Refuse (:class:`ClinicalError`) a validation set that is too small or holds a single class."""
    if len(y_true) < minimum:
        raise ClinicalError(
            f"{what} needs at least {minimum} radiographs with a known label, got {len(y_true)}"
        )
    if len(np.unique(y_true)) < 2:
        raise ClinicalError(f"{what} needs radiographs of at least two classes; the set holds only one")


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature (relative to the served model's) and its figures on the fitting set."""

    temperature: float
    n: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float

    @property
    def at_bound(self) -> bool:
        """The fit stopped at the search bound: the probabilities carry (almost) no information."""
        log_temperature = math.log(self.temperature)
        return min(abs(log_temperature - bound) for bound in _LOG_TEMPERATURE_BOUNDS) < 1e-3

    def record(self, served_temperature: float, applied: bool) -> Calibration:
        """The model card's record of this fit, made on a model at ``served_temperature``."""
        return Calibration(
            n=self.n,
            fitted_temperature=self.temperature,
            ece_before=self.ece_before,
            ece_after=self.ece_after,
            nll_before=self.nll_before,
            nll_after=self.nll_after,
            served_temperature=served_temperature,
            applied=applied,
        )


def fit_temperature(y_true: np.ndarray, probabilities: np.ndarray) -> TemperatureFit:
    """The temperature minimizing the negative log-likelihood of ``softmax(log p / T)``."""
    check_set(y_true, "fitting a temperature")
    labels = list(range(probabilities.shape[1]))

    def nll(log_temperature: float) -> float:
        return float(
            metrics.log_loss(y_true, scaled(probabilities, math.exp(log_temperature)), labels=labels)
        )

    best = minimize_scalar(nll, bounds=_LOG_TEMPERATURE_BOUNDS, method="bounded", options={"xatol": 1e-6})
    temperature = math.exp(float(best.x))
    after = scaled(probabilities, temperature)
    return TemperatureFit(
        temperature=temperature,
        n=len(y_true),
        ece_before=expected_calibration_error(y_true, probabilities),
        ece_after=expected_calibration_error(y_true, after),
        nll_before=nll(0.0),
        nll_after=float(metrics.log_loss(y_true, after, labels=labels)),
    )


def parse_rules(specs: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """``RULE`` or ``LABEL=RULE`` → {label: rule}; rules: youden, sensitivity>=X, specificity>=X.

    A rule without a label applies to every label (binary models: to the second label only).
    """
    rules: dict[str, str] = {}
    for spec in specs:
        parsed = _SPEC_PATTERN.match(spec.replace(" ", ""))
        if parsed is None or not RULE_PATTERN.match(parsed["rule"]):
            raise ClinicalError(
                f"threshold rule {spec!r}: expected [LABEL=]youden|sensitivity>=X|specificity>=X"
            )
        label = parsed["label"]
        if label and label not in labels:
            raise ClinicalError(f"threshold rule {spec!r}: label {label!r} is not one of {list(labels)}")
        for target in [label] if label else (labels[1:] if len(labels) == 2 else labels):
            rules[target] = parsed["rule"]
    return rules


def choose_threshold(positive: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """The threshold on one label's probability that ``rule`` picks on a validation set (ROC curve)."""
    fpr, tpr, thresholds = metrics.roc_curve(positive, scores, drop_intermediate=False)
    if rule == "youden":
        index = int(np.argmax(tpr - fpr))
    else:
        kind, _, value = rule.partition(">=")
        target = float(value)
        if kind == "sensitivity":  # highest threshold (best specificity) still reaching the sensitivity
            index = int(np.argmax(tpr >= target - 1e-12))
        else:  # lowest threshold (best sensitivity) still keeping the specificity
            index = int(np.nonzero(1 - fpr >= target - 1e-12)[0][-1])
    return float(min(thresholds[index], 1.0))


def operating_points(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], rules: Mapping[str, str]
) -> dict[str, OperatingPoint]:
    """{label: threshold, rule, sensitivity, specificity, n} chosen one-vs-rest on a validation set."""
    check_set(y_true, "choosing a threshold")
    points = {}
    for label, rule in rules.items():
        k = list(labels).index(label)
        positive = y_true == k
        if positive.all() or not positive.any():
            raise ClinicalError(f"choosing a threshold for {label!r} needs positive and negative radiographs")
        threshold = choose_threshold(positive, probabilities[:, k], rule)
        figures = operating_point_figures(positive, probabilities[:, k], threshold)
        points[label] = OperatingPoint.from_dict({"rule": rule, **figures})
    return points
