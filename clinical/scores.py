"""Classification metrics of a served model from its result rows, with scikit-learn.

Every figure is computed from the probabilities written in ``predictions.jsonl`` (rounded as the
client writes them), so anyone can recompute it from that file. ``ece`` is the top-label expected
calibration error over equal-width confidence bins; intervals are percentile bootstrap intervals.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics

from radserve.settings import SETTINGS

_CLINICAL = SETTINGS.clinical


def expected_calibration_error(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = _CLINICAL.ece_bins
) -> float:
    """Top-label ECE: bins ``(k/bins, (k+1)/bins]`` of the top probability, weighted by their size."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(float)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for index in range(bins):
        members = which == index
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(y_true))


def reliability_bins(
    y_true: np.ndarray, probabilities: np.ndarray, bins: int = _CLINICAL.ece_bins
) -> list[dict[str, float]]:
    """Per confidence bin: its bounds, count, mean confidence and accuracy (the reliability diagram)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return [
        {
            "low": index / bins,
            "high": (index + 1) / bins,
            "count": int((which == index).sum()),
            "confidence": float(confidence[which == index].mean()) if (which == index).any() else 0.0,
            "accuracy": float(correct[which == index].mean()) if (which == index).any() else 0.0,
        }
        for index in range(bins)
    ]


def auroc(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Macro one-vs-rest AUROC (binary: of the second label); ``None`` when a class is absent."""
    classes = probabilities.shape[1]
    if len(np.unique(y_true)) < classes:
        return None
    if classes == 2:
        return float(metrics.roc_auc_score(y_true, probabilities[:, 1]))
    return float(
        metrics.roc_auc_score(
            y_true, probabilities, multi_class="ovr", average="macro", labels=range(classes)
        )
    )


def bootstrap_interval(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float | None],
    resamples: int = _CLINICAL.bootstrap_resamples,
    seed: int = _CLINICAL.bootstrap_seed,
    level: float = _CLINICAL.confidence_level,
) -> list[float] | None:
    """Percentile bootstrap interval: ``resamples`` draws of ``default_rng(seed).integers(0, n, n)``.

    Resamples where the statistic is undefined (a class drawn zero times) are skipped.
    """
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(y_true), len(y_true))
        value = statistic(y_true[index], probabilities[index])
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _accuracy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    return float(metrics.accuracy_score(y_true, probabilities.argmax(axis=1)))


def per_class(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, specificity, F1, AUROC, average precision and support of each label."""
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(labels)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, predicted, labels=indices, zero_division=0
    )
    confusion = metrics.confusion_matrix(y_true, predicted, labels=indices)
    result = {}
    for k, label in enumerate(labels):
        positive = y_true == k
        negatives = confusion.sum() - confusion[k].sum()
        false_positive = confusion[:, k].sum() - confusion[k, k]
        defined = 0 < positive.sum() < len(y_true)
        result[label] = {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "specificity": float((negatives - false_positive) / negatives) if negatives else None,
            "f1": float(f1[k]),
            "auroc": float(metrics.roc_auc_score(positive, probabilities[:, k])) if defined else None,
            "ap": float(metrics.average_precision_score(positive, probabilities[:, k])) if defined else None,
            "support": int(support[k]),
        }
    return result


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """The figures of ``evaluation.json`` for label indices ``y_true`` and probabilities ``[n, C]``."""
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(labels)))
    with warnings.catch_warnings():
        # balanced accuracy warns about classes absent from y_pred; the Brier score about rows whose
        # probabilities, rounded to 1e-6 in the result rows, do not sum to exactly one
        warnings.simplefilter("ignore")
        balanced = float(metrics.balanced_accuracy_score(y_true, predicted))
        brier = float(metrics.brier_score_loss(y_true, probabilities, labels=indices))
    return {
        "n": len(y_true),
        "labels": list(labels),
        "accuracy": _accuracy(y_true, probabilities),
        "balanced_accuracy": balanced,
        "macro_auroc": auroc(y_true, probabilities),
        "brier": brier,
        "ece": expected_calibration_error(y_true, probabilities),
        "confusion": metrics.confusion_matrix(y_true, predicted, labels=indices).tolist(),
        "per_class": per_class(y_true, probabilities, labels),
        "accuracy_ci": bootstrap_interval(y_true, probabilities, _accuracy),
        "macro_auroc_ci": bootstrap_interval(y_true, probabilities, auroc),
        "reliability": reliability_bins(y_true, probabilities),
    }


def operating_point_figures(
    positive: np.ndarray, scores: np.ndarray, threshold: float
) -> dict[str, float | int | None]:
    """Sensitivity and specificity of ``scores >= threshold`` for one label against the rest."""
    called = scores >= threshold
    positives, negatives = int(positive.sum()), int((~positive).sum())
    return {
        "threshold": threshold,
        "sensitivity": float((called & positive).sum() / positives) if positives else None,
        "specificity": float((~called & ~positive).sum() / negatives) if negatives else None,
        "n": len(positive),
        "positives": positives,
    }
