"""The evaluation's figures: ROC curves, reliability diagram (with counts), confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], path: Path) -> Path:
    """One-vs-rest ROC curve of every label present with its AUROC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5))
    for k, label in enumerate(labels):
        positive = y_true == k
        if 0 < positive.sum() < len(y_true):
            fpr, tpr, _ = roc_curve(positive, probabilities[:, k])
            area = roc_auc_score(positive, probabilities[:, k])
            axes.plot(fpr, tpr, label=f"{label} (AUROC {area:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(
        xlabel="1 - specificity", ylabel="sensitivity", title="ROC, one vs rest", xlim=(0, 1), ylim=(0, 1.01)
    )
    axes.legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_reliability(bins: Sequence[dict[str, float]], ece: float, path: Path) -> Path:
    """Accuracy against top-label confidence per bin, the count written on each bar."""
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = bins[0]["high"] - bins[0]["low"]
    used = [b for b in bins if b["count"]]
    centres = [b["low"] + width / 2 for b in used]
    top.bar(centres, [b["accuracy"] for b in used], width=width * 0.9, color="tab:blue", label="accuracy")
    top.plot(centres, [b["confidence"] for b in used], "o", color="tab:red", label="mean confidence")
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for centre, b in zip(centres, used, strict=True):
        top.annotate(f"{b['count']}", (centre, b["accuracy"]), ha="center", va="bottom", fontsize=7)
    top.set(ylabel="accuracy", title=f"Reliability (top label), ECE {ece:.3f}", ylim=(0, 1.08))
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, [b["count"] for b in used], width=width * 0.9, color="tab:grey")
    bottom.set(xlabel="confidence", ylabel="radiographs", xlim=(0, 1))
    return _save(figure, path)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """The confusion matrix (rows: truth, columns: prediction)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 5))
    display = ConfusionMatrixDisplay(np.asarray(confusion), display_labels=list(labels))
    display.plot(ax=axes, colorbar=False, cmap="Blues", xticks_rotation=45)
    axes.set(xlabel="predicted", ylabel="truth", title="Confusion matrix")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path
