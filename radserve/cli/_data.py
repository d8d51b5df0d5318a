"""``radserve synth`` and ``radserve train``: synthetic radiographs and the demo model."""

from __future__ import annotations

import argparse
from pathlib import Path

from radserve.cli._common import EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from radserve.synthetic import write_synthetic_set

    matrix = tuple(args.matrix) if args.matrix else None
    records = write_synthetic_set(
        args.out_dir, args.count, seed=args.seed, matrix=matrix, compressed_share=args.compressed_share
    )
    syntaxes = sorted({record.transfer_syntax for record in records})
    print(
        f"wrote {len(records)} synthetic radiographs to {args.out_dir} "
        f"(transfer syntaxes: {', '.join(syntaxes)})"
    )
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from radserve.export.train import TrainingPlan, train

    plan = TrainingPlan(
        architecture=args.arch,
        input_size=args.input_size,
        train_images=args.images,
        held_out_images=args.held_out,
        epochs=args.epochs,
        seed=args.seed,
    )
    report = train(plan, args.output)
    print(
        f"saved {args.output}: {report.architecture}, held-out accuracy {report.held_out_accuracy:.1%} "
        f"on {report.held_out_images} images, {report.seconds:.0f} s"
    )
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="write synthetic projection radiographs (DICOM)")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--count", type=int, default=20)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--matrix", type=int, nargs=2, metavar=("ROWS", "COLUMNS"), help="fixed matrix size")
    synth.add_argument("--compressed-share", type=float, default=0.25)
    synth.set_defaults(run=_synth)

    train = commands.add_parser("train", help="train the demo classifier on synthetic radiographs")
    train.add_argument("--output", type=Path, default=Path("build/demo-resnet18.pt"))
    train.add_argument("--arch", default="resnet18")
    train.add_argument("--input-size", type=int, default=224)
    train.add_argument("--images", type=int, default=600)
    train.add_argument("--held-out", type=int, default=150)
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(run=_train)
