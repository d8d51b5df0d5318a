"""``radserve evaluate``: how the served model performs on labelled radiographs.

Writes ``predictions.jsonl`` (every result row plus ``truth`` and ``excluded``), ``evaluation.json``
(the figures of :func:`radserve.clinical.scores.classification_metrics`, the operating points of
the model card measured on this set, every excluded row, and with a truth ``box`` column the boxes'
mAP of :mod:`radserve.clinical.box_scores`) and ``roc.png``, ``reliability.png``,
``confusion.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from radserve.clinical.box_scores import labeled_box_map
from radserve.clinical.labeled import LabeledSet
from radserve.clinical.plots import plot_confusion, plot_reliability, plot_roc
from radserve.clinical.scores import classification_metrics, operating_point_figures

PREDICTIONS_FILE = "predictions.jsonl"
EVALUATION_FILE = "evaluation.json"


def evaluation_report(labeled: LabeledSet) -> dict[str, Any]:
    """The content of ``evaluation.json``."""
    card = labeled.card
    y_true, probabilities = labeled.y_true, labeled.probabilities
    versions = sorted({row["model_version"] for row in labeled.rows if row["model_version"]})
    report: dict[str, Any] = {
        "model": card.name,
        "model_version": ",".join(versions),
        "temperature": card.temperature,
        "files": labeled.summary.files,
        "rows": len(labeled.rows),
        "unit": "radiographs" if card.channels == 1 else "studies",  # what a row is
        **classification_metrics(y_true, probabilities, card.labels),
    }
    points = {}
    for label, point in card.operating_points.items():
        k = card.labels.index(label)
        figures = operating_point_figures(y_true == k, probabilities[:, k], point.threshold)
        points[label] = {**figures, "rule": point.rule, "validation": asdict(point)}
    report["operating_points"] = points
    report["out_of_distribution"] = _ood_report(labeled, card.ood_threshold)
    report["excluded"] = labeled.excluded_report()
    # boxes are measured where there are any, true or detected (a box column left empty throughout,
    # as a system without boxes writes it, is no box truth)
    if any(row.get("truth_boxes") or row.get("boxes") for row in labeled.rows if "truth_boxes" in row):
        report["boxes"] = labeled_box_map(labeled.rows, card.labels[0])
    return report


def _ood_report(labeled: LabeledSet, threshold: float | None) -> dict[str, Any]:
    """How many evaluated radiographs the card's out-of-distribution flag marked (issue: input contracts)."""
    evaluated = [row for row in labeled.rows if not row["excluded"]]
    flagged = sum(bool(row.get("ood")) for row in evaluated)
    return {
        "threshold": threshold,
        "flagged": flagged,
        "of": len(evaluated),
        "rate": flagged / len(evaluated) if evaluated and threshold is not None else None,
    }


def write_evaluation(labeled: LabeledSet, out_dir: Path) -> dict[str, Any]:
    """Write the predictions, the report and the three plots into ``out_dir``; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(row, sort_keys=True) + "\n" for row in labeled.rows)
    report = evaluation_report(labeled)
    (out_dir / EVALUATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    labels = labeled.card.labels
    plot_roc(labeled.y_true, labeled.probabilities, labels, out_dir / "roc.png")
    plot_reliability(report["reliability"], report["ece"], out_dir / "reliability.png")
    plot_confusion(report["confusion"], labels, out_dir / "confusion.png")
    return report


def _interval(values: list[float] | None) -> str:
    return f" (95 % CI {values[0]:.3f}-{values[1]:.3f})" if values else ""


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The evaluation in a few lines for a terminal."""
    auroc = report["macro_auroc"]
    lines = [
        f"{report['model']} v{report['model_version']}: {report['n']} {report['unit']} evaluated, "
        f"{report['excluded']['count']} excluded of {report['rows']} rows",
        f"accuracy {report['accuracy']:.3f}{_interval(report['accuracy_ci'])}, "
        f"balanced accuracy {report['balanced_accuracy']:.3f}",
        f"macro AUROC {'n/a' if auroc is None else f'{auroc:.3f}'}{_interval(report['macro_auroc_ci'])}, "
        f"Brier {report['brier']:.4f}, ECE {report['ece']:.4f}",
    ]
    for label, point in report["operating_points"].items():
        sensitivity, specificity = point["sensitivity"], point["specificity"]
        lines.append(
            f"operating point {label} >= {point['threshold']:.4f} ({point['rule']}): "
            f"sensitivity {'n/a' if sensitivity is None else f'{sensitivity:.3f}'}, "
            f"specificity {'n/a' if specificity is None else f'{specificity:.3f}'}"
        )
    ood = report["out_of_distribution"]
    if ood["threshold"] is not None:
        lines.append(
            f"flagged out of distribution: {ood['flagged']} of {ood['of']} "
            f"(top probability < {ood['threshold']:.3f})"
        )
    boxes = report.get("boxes")
    if boxes is not None:
        figures = (
            "n/a (no true box)"
            if boxes["map_50"] is None
            else f"mAP@0.5 {boxes['map_50']:.3f}, mAP@0.5:0.95 {boxes['map_50_95']:.3f}"
        )
        lines.append(
            f"boxes ({boxes['library']}): {figures} on {boxes['images']} radiographs, "
            f"{boxes['truth_boxes']} true boxes, {boxes['detections']} detections"
        )
    for reason, count in report["excluded"]["by_reason"].items():
        lines.append(f"excluded {reason}: {count}")
    return lines
