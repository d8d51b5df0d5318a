"""``radserve classify-series``: MRI studies (T1W + T2W sagittal series) → one result row per study."""

from __future__ import annotations

import argparse
from pathlib import Path

from radserve.cli._common import EXIT_INPUT_FAILURES, EXIT_OK, add_connection_arguments, connection_of


def _classify_series(args: argparse.Namespace) -> int:
    from radserve.client.mri_classify import classify_studies
    from radserve.client.results import ResultWriter

    rows = classify_studies(args.paths, args.model, connection_of(args), args.lesion_slice)
    if args.output is not None:
        with ResultWriter(args.output) as writer:
            writer.write(rows)
    for row in rows:
        outcome = f"{row.label} {row.score:.3f}" if row.status == "ok" else f"{row.error_reason}: {row.error}"
        print(f"{row.study_instance_uid or row.path}  {outcome}")
    failed = sum(row.status != "ok" for row in rows)
    print(f"{len(rows)} rows, {failed} failed")
    return EXIT_INPUT_FAILURES if failed else EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    series = commands.add_parser(
        "classify-series", help="classify MRI studies (T1W + T2W sagittal series): one row per study"
    )
    series.add_argument("paths", nargs="+", type=Path, help="DICOM files and folders (any order, any mix)")
    series.add_argument("--model", required=True, help="a model whose card has channels > 1")
    series.add_argument("--output", type=Path, help="FILE.jsonl or FILE.csv")
    series.add_argument(
        "--lesion-slice", type=int, help="lesion slice: T1W index along the slice normal (default: central)"
    )
    add_connection_arguments(series)
    series.set_defaults(run=_classify_series)
