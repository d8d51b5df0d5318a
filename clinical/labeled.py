"""Radiographs classified by the served model and joined with their true labels.

Every result row is kept: it is either in the labelled set or excluded with a reason (the file
failed, the truth file has no entry for it, its label is empty or not one of the model's labels).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radserve.client.options import ClassifyOptions, RunSummary
from radserve.client.results import ResultRow
from radserve.client.session import Session
from radserve.clinical.truth import Truth
from radserve.errors import ClinicalError
from radserve.model_card import ModelCard
from radserve.routing import RouterCard


@dataclass(frozen=True)
class LabeledSet:
    """The run's rows (each with ``truth`` and ``excluded``), and the labelled ones as arrays."""

    card: ModelCard
    rows: list[dict[str, Any]]
    y_true: np.ndarray  # label indices of the included rows
    probabilities: np.ndarray  # [n, C] as written in the rows
    summary: RunSummary

    @property
    def excluded(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["excluded"]]

    def excluded_report(self) -> dict[str, Any]:
        """Count, count per reason and every excluded row (path, UID, frame, reason, error)."""
        by_reason: dict[str, int] = {}
        for row in self.excluded:
            by_reason[row["excluded"]] = by_reason.get(row["excluded"], 0) + 1
        keys = ("path", "sop_instance_uid", "frame", "excluded", "error", "truth")
        return {
            "count": len(self.excluded),
            "by_reason": dict(sorted(by_reason.items())),
            "rows": [{key: row[key] for key in keys} for row in self.excluded],
        }


def _exclusion(row: ResultRow, truth: str | None, labels: tuple[str, ...]) -> str:
    if row.status != "ok":
        return row.error_reason or "error"
    if truth is None:
        return "no_truth"
    if not truth:
        return "missing_label"
    return "" if truth in labels else "unknown_label"


def join_truth(card: ModelCard, rows: Iterable[ResultRow], truth: Truth, summary: RunSummary) -> LabeledSet:
    """Join rows with the truth file; :class:`ClinicalError` when no radiograph is left to measure."""
    joined = []
    for row in sorted(rows, key=lambda r: (r.path, r.frame or 0)):
        label = truth.label_of(row) if row.status == "ok" else None
        entry = row.to_dict() | {"truth": label, "excluded": _exclusion(row, label, card.labels)}
        if truth.boxes_by_uid is not None:  # the truth file has boxes: the detector's mAP is measured
            entry["truth_boxes"] = truth.boxes_of(row)
        joined.append(entry)
    included = [row for row in joined if not row["excluded"]]
    if not included:
        matched = sum(row["truth"] is not None for row in joined)
        raise ClinicalError(
            f"truth file {truth.source}: none of the {len(joined)} result rows can be measured "
            f"({matched} matched by sop_instance_uid or path, labels {list(card.labels)})"
        )
    index = {label: k for k, label in enumerate(card.labels)}
    return LabeledSet(
        card=card,
        rows=joined,
        y_true=np.asarray([index[row["truth"]] for row in included], dtype=np.int64),
        probabilities=np.asarray(
            [[row["probabilities"][label] for label in card.labels] for row in included]
        ),
        summary=summary,
    )


async def _classify(
    files: tuple[Path, ...], model: str, options: ClassifyOptions
) -> tuple[ModelCard, list[ResultRow], RunSummary]:
    """One session: a radiograph model's rows from its runner, a study model's one row per study."""
    async with Session(model, options) as session:
        card = session.card
        if isinstance(card, RouterCard):
            raise ClinicalError(f"model {model!r} is a router: evaluate one of its stages")
        if session.takes_studies:
            started = time.monotonic()
            rows = await session.classify_studies(files)
            summary = RunSummary(files=len(files), seconds=time.monotonic() - started)
            for row in rows:
                summary.count(row)
            return card, rows, summary
        collected: list[ResultRow] = []
        run = session.classify(files)
        async for file_rows in run:
            collected.extend(file_rows)
        return card, collected, run.summary


def classify_with_truth(
    files: tuple[Path, ...], model: str, truth: Truth, options: ClassifyOptions
) -> LabeledSet:
    """Classify ``files`` through the served ``model`` (the normal client) and join the truth."""
    card, rows, summary = asyncio.run(_classify(files, model, options))
    return join_truth(card, rows, truth, summary)
