"""``radserve explain``: a Grad-CAM overlay of one radiograph from the served Grad-CAM companion."""

from __future__ import annotations

import argparse
from pathlib import Path

from radserve.cli._common import EXIT_OK
from radserve.cli._evaluate import add_server_arguments, serving
from radserve.errors import ConfigurationError


def _explain(args: argparse.Namespace) -> int:
    from radserve.clinical.explain import explain_file, write_png, write_secondary_capture

    if args.output.suffix.lower() != ".png":
        raise ConfigurationError(f"{args.output}: output must end in .png")
    with serving(args) as connection:
        explanation = explain_file(args.file, args.model, connection, args.label)
    write_png(explanation, args.output)
    print(
        f"wrote {args.output}: Grad-CAM of {explanation.label} (probability {explanation.probability:.3f}) "
        f"from {explanation.model} version {explanation.model_version}"
    )
    if args.dicom:
        written = write_secondary_capture(explanation, args.output.with_suffix(".dcm"))
        print(f"wrote {written}: DICOM Secondary Capture referencing {explanation.sop_instance_uid}")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser("explain", help="Grad-CAM heat map of a radiograph from the served model")
    explain.add_argument("file", type=Path, help="a DICOM file (its first frame)")
    explain.add_argument("--model", required=True, help="the classifier (its companion NAME_gradcam answers)")
    explain.add_argument("--output", type=Path, required=True, help="OUT.png")
    explain.add_argument("--label", help="class to explain (default: the predicted one)")
    add_server_arguments(explain)
    explain.add_argument(
        "--dicom",
        action="store_true",
        help="also write OUT.dcm, a DICOM Secondary Capture in the source's study",
    )
    explain.set_defaults(run=_explain)
