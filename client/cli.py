"""The ``radserve`` command line: synth, train, export, serve, classify.

Exit codes: 0 success; 1 the run finished but some inputs failed; 2 the command could not run
(bad arguments, server unreachable, export refused).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from client.errors import RadserveError
from server_config.settings import SETTINGS

LOGGER = logging.getLogger("radserve")

EXIT_OK, EXIT_INPUT_FAILURES, EXIT_FAILURE = 0, 1, 2


def _synth(args: argparse.Namespace) -> int:
    from client.dicom.synthetic import write_synthetic_set

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
    from export.train import TrainingPlan, train

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


def _export(args: argparse.Namespace) -> int:
    from export.pipeline import ExportRequest, export_checkpoint

    result = export_checkpoint(
        ExportRequest(
            checkpoint=args.checkpoint,
            name=args.name,
            repository=args.repository,
            target=args.target,
            samples=args.samples,
            sample_folder=args.samples_from,
            min_top1_agreement=args.min_top1,
        )
    )
    parity = result.parity
    print(
        f"published {result.version_dir} ({result.card.architecture}, {result.card.precision}); parity vs "
        f"{parity.reference} on {parity.samples} samples: top-1 {parity.top1_agreement:.1%}, "
        f"max abs diff {parity.max_abs_diff:.2e}"
    )
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from server_config.settings import Ports
    from server_config.triton import TritonServer

    server = TritonServer(
        args.repository,
        host=args.host,
        ports=Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        verbose=args.log_verbose,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(
            f"tritonserver ready (pid {server.pid}), repository {args.repository}\n"
            f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
            f"  log     {server.log_file}\nCtrl-C to stop.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not server.is_running():
                print(f"tritonserver exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return EXIT_FAILURE
        print("stopping tritonserver ...", flush=True)
    return EXIT_OK


def _classify(args: argparse.Namespace) -> int:
    return _run_classify(args, args.url)


def _demo(args: argparse.Namespace) -> int:
    from server_config.triton import TritonServer, free_ports
    from server_config.triton_metrics import model_counters

    with TritonServer(args.repository, ports=free_ports()) as server:
        print(f"tritonserver ready on {server.grpc_url} (repository {args.repository})", flush=True)
        before = model_counters(server.metrics_url, args.model)
        code = _run_classify(args, server.grpc_url)
        served = model_counters(server.metrics_url, args.model) - before
        print(
            f"server: {served.inferences:.0f} inferences in {served.executions:.0f} batches, "
            f"average batch size {served.average_batch_size:.2f}"
        )
    return code


def _run_classify(args: argparse.Namespace, url: str) -> int:
    from client.classify import ClassifyOptions, classify
    from client.inputs import discover
    from client.report import print_rows, print_summary
    from client.results import ResultRow, ResultWriter

    inputs = discover(args.paths)
    if inputs.sidecars:
        print(
            f"left out {len(inputs.sidecars)} side file(s) in the folders (e.g. {inputs.sidecars[0]})",
            file=sys.stderr,
        )
    rows: list[ResultRow] = []
    writer = ResultWriter(args.output) if args.output else None

    def on_row(row: ResultRow) -> None:
        rows.append(row)
        if writer is not None:
            writer.write(row)

    options = ClassifyOptions(url=url, max_in_flight=args.max_in_flight, workers=args.workers)
    try:
        summary = asyncio.run(classify(inputs.files, args.model, on_row, options))
    finally:
        if writer is not None:
            writer.close()
    if not args.quiet:
        print_rows(rows, limit=args.show)
    print_summary(summary, args.model)
    return EXIT_INPUT_FAILURES if summary.errors else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radserve", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)

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

    export = commands.add_parser("export", help="export a checkpoint into a Triton model repository")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--name", required=True, help="model name in the repository")
    export.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    export.add_argument("--target", choices=("embedded", "onnxruntime", "tensorrt"), default="embedded")
    export.add_argument("--samples", type=int, default=32, help="radiographs for the parity check")
    export.add_argument("--samples-from", type=Path, help="folder of DICOM files for the parity check")
    export.add_argument("--min-top1", type=float, default=1.0, help="required top-1 agreement with PyTorch")
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="run the embedded tritonserver until Ctrl-C")
    serve.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    serve.add_argument("--host", default=SETTINGS.host)
    serve.add_argument("--http-port", type=int, default=SETTINGS.ports.http)
    serve.add_argument("--grpc-port", type=int, default=SETTINGS.ports.grpc)
    serve.add_argument("--metrics-port", type=int, default=SETTINGS.ports.metrics)
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.set_defaults(run=_serve)

    classify = commands.add_parser("classify", help="classify DICOM files and folders")
    classify.add_argument("--url", default=SETTINGS.grpc_url, help="Triton gRPC HOST:PORT")
    classify.set_defaults(run=_classify)
    demo = commands.add_parser("demo", help="start the embedded server, classify, print, stop")
    demo.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    demo.set_defaults(run=_demo)
    for command in (classify, demo):
        command.add_argument("paths", nargs="+", help="DICOM files and folders")
        command.add_argument("--model", required=True)
        command.add_argument("--output", type=Path, help="results file, .jsonl or .csv")
        command.add_argument("--max-in-flight", type=int, default=SETTINGS.client_max_in_flight)
        command.add_argument(
            "--workers", type=int, default=SETTINGS.client_decode_workers, help="decoding processes"
        )
        command.add_argument("--show", type=int, default=50, help="print at most this many rows")
        command.add_argument("-q", "--quiet", action="store_true", help="print the summary only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except RadserveError as error:
        print(f"radserve {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
