"""Human-readable output of a classify run: a results table and a summary line."""

from __future__ import annotations

import os
from collections.abc import Sequence

from radserve.client.classify import RunSummary
from radserve.client.results import ResultRow


def print_rows(rows: Sequence[ResultRow], total: int) -> None:
    """A table of ``rows`` (the first of a run's ``total``), ordered by file."""
    ordered = sorted(rows, key=lambda row: (row.path, row.frame or 0))
    if not ordered:
        return
    width = min(60, max(len(_short(row.path)) for row in ordered))
    print(f"{'file':<{width}}  {'label':<12} {'score':>6} {'ms':>8}")
    for row in ordered:
        name = _short(row.path) + (f"[{row.frame}]" if row.frame else "")
        if row.status == "ok":
            print(f"{name:<{width}}  {row.label:<12} {row.score:>6.3f} {row.latency_ms:>8.1f}")
        else:
            what = "NOT ACCEPTED" if row.status == "not_accepted" else "ERROR"
            print(f"{name:<{width}}  {what} {row.error_reason}: {row.error}")
    if total > len(ordered):
        print(f"... {total - len(ordered)} more rows")


def print_summary(summary: RunSummary, model: str) -> None:
    errors = _by_reason(summary.errors_by_reason)
    refused = _by_reason(summary.not_accepted_by_reason)
    print(
        f"{model}: {summary.files} files, {summary.radiographs} radiographs classified "
        f"({summary.out_of_distribution} flagged out of distribution), "
        f"{summary.not_accepted} not accepted{f' ({refused})' if refused else ''}, "
        f"{summary.errors} errors{f' ({errors})' if errors else ''} in {summary.seconds:.2f} s: "
        f"{summary.radiographs_per_second:.1f} radiographs/s"
    )


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))


def _short(path: str) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path
