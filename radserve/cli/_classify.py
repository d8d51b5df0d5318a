"""``radserve classify``, ``radserve demo`` and ``radserve preprocess``: DICOM files → result rows."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.cli._common import (
    EXIT_INPUT_FAILURES,
    EXIT_OK,
    add_connection_arguments,
    add_privacy_arguments,
    connection_of,
    pseudonyms_of,
)
from radserve.errors import ConfigurationError
from radserve.model_card import ModelCard
from radserve.settings import SETTINGS

if TYPE_CHECKING:
    from radserve.client.grpc_client import ConnectionOptions


def _preprocess(args: argparse.Namespace) -> int:
    from radserve.client.preprocess import write_model_inputs

    if args.output.suffix.lower() not in (".png", ".npy"):
        raise ConfigurationError(f"{args.output}: output must end in .png or .npy")
    if args.repository is not None:
        card = ModelCard.from_repository(args.repository, args.model)
    else:
        card = asyncio.run(_card_from_server(connection_of(args), args.model))
    for written in write_model_inputs(args.file, card, args.output):
        print(f"wrote {written}: uint8 [1, {card.input_size[0]}, {card.input_size[1]}] ({card.resize})")
    return EXIT_OK


async def _card_from_server(connection: ConnectionOptions, model: str) -> ModelCard:
    from radserve.client.grpc_client import AsyncRadiographClient

    async with AsyncRadiographClient.connect(connection) as client:
        await client.wait_ready(model, connection.ready_timeout_seconds)
        return await client.model_card(model)


def _classify(args: argparse.Namespace) -> int:
    return _run_classify(args, connection_of(args))


def _demo(args: argparse.Namespace) -> int:
    from radserve.client.grpc_client import ConnectionOptions
    from radserve.server_config.triton import TritonServer, free_ports
    from radserve.server_config.triton_metrics import model_counters

    with TritonServer(args.repository, ports=free_ports()) as server:
        print(f"tritonserver ready on {server.grpc_url} (repository {args.repository})", flush=True)
        before = model_counters(server.metrics_url, args.model)
        code = _run_classify(args, ConnectionOptions(server.grpc_url))
        served = model_counters(server.metrics_url, args.model) - before
        print(
            f"server: {served.inferences:.0f} inferences in {served.executions:.0f} batches, "
            f"average batch size {served.average_batch_size:.2f}"
        )
    return code


def _run_classify(args: argparse.Namespace, connection: ConnectionOptions) -> int:
    from radserve.client.ownership import OwnerLock

    # One owner per output, taken before --resume reads it: a listener or another run refuses here.
    with OwnerLock(args.output) if args.output is not None else contextlib.nullcontext():
        return _classify_files(args, connection)


def _classify_files(args: argparse.Namespace, connection: ConnectionOptions) -> int:
    from radserve.client.classify import ClassifyOptions, classify
    from radserve.client.console import print_rows, print_summary
    from radserve.client.inputs import discover
    from radserve.client.progress import Progress
    from radserve.client.results import ResultRow, ResultWriter, completed_paths, resolved
    from radserve.client.run_metrics import ClientMetrics

    inputs = discover(args.paths)
    if inputs.sidecars:
        print(
            f"left out {len(inputs.sidecars)} side file(s) in the folders (e.g. {inputs.sidecars[0]})",
            file=sys.stderr,
        )
    files = inputs.files
    private = pseudonyms_of(args, files)
    hide = private.paths
    if args.resume:
        if args.output is None:
            raise ConfigurationError("--resume needs --output")
        done = completed_paths(args.output, key=str if hide else resolved)
        files = tuple(path for path in files if (hide(path) if hide else resolved(path)) not in done)
        print(
            f"resuming: {len(inputs.files) - len(files)} of {len(inputs.files)} files already done",
            file=sys.stderr,
        )
    shown: list[ResultRow] = []
    writer = ResultWriter(args.output, append=args.resume) if args.output else None
    progress = Progress(len(files))

    def on_rows(rows: list[ResultRow]) -> None:
        rows = [private.row(row) for row in rows]
        if writer is not None:  # absolute paths: --resume's keys do not depend on the directory
            absolute = rows if hide is not None else [replace(row, path=resolved(row.path)) for row in rows]
            writer.write(absolute)
        shown.extend(rows[: max(0, args.show - len(shown))])
        for row in rows:
            progress.update(row)

    metrics = ClientMetrics()
    if args.metrics_port is not None:
        port = metrics.serve(args.metrics_port)
        print(f"client metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    options = ClassifyOptions(
        max_in_flight=args.max_in_flight,
        images_per_request=args.images_per_request,
        workers=args.workers,
        decode=args.decode,
        sr_dir=args.sr_dir,
        gsps=args.gsps,
        metrics=metrics,
        accept_any=args.accept_any,
        hide_paths=hide.hide if hide is not None else None,
    ).with_connection(connection)
    try:
        summary = asyncio.run(classify(files, args.model, on_rows, options))
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if args.metrics_file is not None:
            metrics.write_textfile(args.metrics_file)
        metrics.stop_serving()
    if not args.quiet:
        print_rows(shown, total=summary.radiographs + summary.errors + summary.not_accepted)
    print_summary(summary, args.model)
    failed = summary.errors or (args.strict and summary.not_accepted)
    return EXIT_INPUT_FAILURES if failed else EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _add_run_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("paths", nargs="+", help="DICOM files and folders")
    command.add_argument("--model", required=True)
    command.add_argument("--output", type=Path, help="results file, .jsonl or .csv")
    command.add_argument(
        "--max-in-flight",
        type=_positive,
        default=SETTINGS.client.max_in_flight,
        help="radiographs on the wire at once",
    )
    command.add_argument(
        "--images-per-request",
        type=_positive,
        default=SETTINGS.client.images_per_request,
        help="pack up to this many radiographs that are ready together into one request",
    )
    command.add_argument(
        "--workers", type=_positive, default=SETTINGS.client.decode_workers, help="decode worker processes"
    )
    command.add_argument(
        "--decode",
        choices=("cpu", "gpu"),
        default=SETTINGS.client.decode,
        help="gpu: nvImageCodec decodes JPEG 2000, HTJ2K and JPEG Lossless and the display table and resize "
        "run on the GPU (extra 'gpu'); other files fall back to the CPU workers, counted in the metrics",
    )
    command.add_argument("--show", type=int, default=50, help="print at most this many rows")
    command.add_argument("-q", "--quiet", action="store_true", help="print the summary only")
    command.add_argument(
        "--resume", action="store_true", help="skip inputs done in --output (transient errors are redone)"
    )
    command.add_argument(
        "--strict", action="store_true", help="exit 1 when an instance is outside the model's input contract"
    )
    command.add_argument(
        "--accept-any",
        action="store_true",
        help="research use: classify every instance, ignoring the input contract (recorded in each row)",
    )
    command.add_argument("--sr-dir", type=Path, help="write a DICOM Comprehensive SR per radiograph here")
    command.add_argument(
        "--gsps",
        action="store_true",
        help="with --sr-dir: also a Grayscale Softcopy Presentation State of each radiograph's boxes",
    )
    add_privacy_arguments(command)
    command.add_argument(
        "--metrics-port", type=int, help="expose the client's Prometheus metrics on 127.0.0.1:PORT"
    )
    command.add_argument(
        "--metrics-file", type=Path, help="write the metrics at the end as a node_exporter textfile"
    )


def register(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser("classify", help="classify DICOM files and folders")
    add_connection_arguments(classify)
    classify.set_defaults(run=_classify)
    demo = commands.add_parser("demo", help="start the embedded server, classify, print, stop")
    demo.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    demo.set_defaults(run=_demo)
    for command in (classify, demo):
        _add_run_arguments(command)

    preprocess = commands.add_parser("preprocess", help="write the tensor a model receives for a file")
    preprocess.add_argument("file", type=Path)
    preprocess.add_argument("--model", required=True)
    preprocess.add_argument("--output", type=Path, required=True, help="OUT.png or OUT.npy")
    preprocess.add_argument("--repository", type=Path, help="read the model card from this repository")
    add_connection_arguments(preprocess)  # or from the server
    preprocess.set_defaults(run=_preprocess)
