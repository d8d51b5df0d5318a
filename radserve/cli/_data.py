"""``radserve synth`` and ``radserve train``: synthetic radiographs and the demo model."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from radserve.cli._common import EXIT_OK
from radserve.errors import RadserveError


def _synth(args: argparse.Namespace) -> int:
    from radserve.synthetic import write_synthetic_set

    matrix = tuple(args.matrix) if args.matrix else None
    if args.system:
        from radserve.synthetic.system_images import write_system_set

        manifest = write_system_set(
            args.system, args.out_dir, args.count, seed=args.seed, matrix=matrix or (640, 528)
        )
        print(f"wrote {args.count} synthetic {args.system} examples to {args.out_dir}; truth in {manifest}")
        return EXIT_OK
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
    if args.detector:
        return _train_detector(args)
    from radserve.export.train import TrainingPlan, demo_plan, train, train_system

    given = {
        "architecture": args.arch,
        "input_size": args.input_size,
        "train_images": args.images,
        "held_out_images": args.held_out,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
    }
    base = demo_plan(args.system) if args.system else TrainingPlan()
    plan = replace(base, **{field: value for field, value in given.items() if value is not None})
    system = args.system
    output = args.output or Path("build") / (f"{system}.pt" if system else "demo-resnet18.pt")
    report = train_system(system, plan, output) if system else train(plan, output)
    auroc = "" if report.held_out_macro_auroc is None else f", macro AUROC {report.held_out_macro_auroc:.3f}"
    print(
        f"saved {output}: {report.architecture}, held-out accuracy {report.held_out_accuracy:.1%}{auroc} "
        f"on {report.held_out_images} inputs, {report.seconds:.0f} s"
    )
    return EXIT_OK


def _train_detector(args: argparse.Namespace) -> int:
    from radserve.export.detector_train import DEMO_PLAN, train_detector

    if not args.system:
        raise RadserveError("--detector needs --system (a system with boxes, e.g. fracture)")
    plan = replace(
        DEMO_PLAN,
        input_size=args.input_size or DEMO_PLAN.input_size,
        train_images=args.images or DEMO_PLAN.train_images,
        epochs=args.epochs or DEMO_PLAN.epochs,
        batch_size=args.batch_size or DEMO_PLAN.batch_size,
        learning_rate=args.learning_rate or DEMO_PLAN.learning_rate,
        seed=DEMO_PLAN.seed if args.seed is None else args.seed,
    )
    output = args.output or Path("build") / f"{args.system}_detector.pt"
    report = train_detector(args.system, plan, output)
    print(
        f"saved {output}: {plan.architecture} at {plan.input_size} px, {plan.train_images} radiographs "
        f"({report.train_boxes} boxes), {plan.epochs} epochs, final loss {report.final_train_loss:.3f}, "
        f"{report.seconds:.0f} s"
    )
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="write synthetic projection radiographs (DICOM)")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--count", type=int, default=20)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--matrix", type=int, nargs=2, metavar=("ROWS", "COLUMNS"), help="fixed matrix size")
    synth.add_argument("--compressed-share", type=float, default=0.25)
    synth.add_argument("--system", help="write a served system's synthetic data instead (radserve systems)")
    synth.set_defaults(run=_synth)

    train = commands.add_parser("train", help="train the demo classifier on synthetic radiographs")
    train.add_argument(
        "--system", help="train a served system's demo (radserve systems) on its synthetic data"
    )
    train.add_argument("--output", type=Path, help="default build/demo-resnet18.pt, or build/SYSTEM.pt")
    train.add_argument("--arch", help="default resnet18, or the system's architecture")
    train.add_argument(
        "--input-size", type=int, help="network input size (default 224, or the system's demo size)"
    )
    train.add_argument(
        "--detector", action="store_true", help="train the system's box detector (SSDlite) instead"
    )
    plans = "default: the demo plan (TrainingPlan, or the system's in radserve.export.train)"
    train.add_argument("--images", type=int, help=f"training images; {plans}")
    train.add_argument("--held-out", type=int, help="held-out images evaluated after training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float, help="peak of the one-cycle schedule")
    train.add_argument("--seed", type=int)
    train.set_defaults(run=_train)
