"""``radserve calibrate``: fit a temperature and operating thresholds on served probabilities.

The fit runs on the client side (radserve.clinical); ``--publish CHECKPOINT`` hands the figures to
the export side, which re-exports the checkpoint as a new version with the temperature inside the
graph and ``temperature``, ``calibration`` and ``operating_points`` in its model card.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from radserve.cli._common import EXIT_OK
from radserve.cli._evaluate import add_labeled_arguments, labeled_set, serving
from radserve.errors import ClinicalError
from radserve.model_card import Calibration, OperatingPoint
from radserve.settings import SETTINGS


def _calibrate(args: argparse.Namespace) -> int:
    from radserve.clinical.calibration import fit_temperature, operating_points, parse_rules, scaled

    with serving(args) as connection:
        labeled = labeled_set(args, connection)
    card = labeled.card
    rules = parse_rules(args.threshold or [], card.labels)
    y_true, probabilities = labeled.y_true, labeled.probabilities
    fit = fit_temperature(y_true, probabilities)
    factor = 1.0 if args.keep_temperature else fit.temperature
    temperature = card.temperature * factor
    print(
        f"{card.name}: {fit.n} radiographs; served temperature {card.temperature:.4g}, fitted factor "
        f"{fit.temperature:.4g} -> temperature {temperature:.4g}"
        + (" (kept: --keep-temperature)" if args.keep_temperature else "")
    )
    print(f"ECE {fit.ece_before:.4f} -> {fit.ece_after:.4f}, NLL {fit.nll_before:.4f} -> {fit.nll_after:.4f}")
    if fit.at_bound:
        print(
            "note: the temperature reached its search bound: on this set the model's probabilities "
            "carry little information"
        )
    points = operating_points(y_true, scaled(probabilities, factor), card.labels, rules) if rules else {}
    for label, point in points.items():
        print(
            f"operating point {label} >= {point.threshold:.6f} ({point.rule}): sensitivity "
            f"{point.sensitivity:.3f}, specificity {point.specificity:.3f} on {point.n} radiographs"
        )
    if args.publish is not None:
        calibration = fit.record(card.temperature, applied=not args.keep_temperature)
        _publish(args, card.checkpoint_sha256, temperature, calibration, points or card.operating_points)
    return EXIT_OK


def _publish(
    args: argparse.Namespace,
    served_sha256: str,
    temperature: float,
    calibration: Calibration,
    points: Mapping[str, OperatingPoint],
) -> None:
    from radserve.export.gradcam import gradcam_name
    from radserve.export.hashing import file_sha256
    from radserve.export.model_config import parse_config
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.export.repository import CONFIG_FILE
    from radserve.export.targets import target_of

    if served_sha256 and file_sha256(args.publish) != served_sha256:
        raise ClinicalError(
            f"{args.publish} is not the checkpoint the served model {args.model!r} was exported from "
            f"(sha256 {served_sha256[:12]}...)"
        )
    # the new version is published on the target (and device) the served one runs on
    config_path = args.repository / args.model / CONFIG_FILE
    target = target_of(parse_config(config_path.read_text())) if config_path.is_file() else None
    request = ExportRequest(
        checkpoint=args.publish,
        name=args.model,
        repository=args.repository,
        target=target.name if target else "embedded",
        device=target.device if target else None,
        card_updates={"temperature": temperature, "calibration": calibration, "operating_points": points},
        gradcam=(args.repository / gradcam_name(args.model)).is_dir(),
    )
    result = export_checkpoint(request)
    print(f"published {result.version_dir} (temperature {temperature:.4g} in the graph and the model card)")
    if result.gradcam_dir is not None:
        print(f"published {result.gradcam_dir} (Grad-CAM companion, same temperature)")


def register(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="fit a temperature and operating thresholds on a validation set"
    )
    add_labeled_arguments(calibrate)
    calibrate.add_argument(
        "--threshold",
        action="append",
        metavar="[LABEL=]RULE",
        help="operating point rule: youden, sensitivity>=X or specificity>=X (all labels, or LABEL's)",
    )
    calibrate.add_argument(
        "--keep-temperature", action="store_true", help="choose thresholds only; keep the served temperature"
    )
    calibrate.add_argument(
        "--publish", type=Path, metavar="CHECKPOINT", help="re-export CHECKPOINT as a new calibrated version"
    )
    calibrate.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    calibrate.set_defaults(run=_calibrate)
