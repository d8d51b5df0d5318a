"""``radserve evaluate``: metrics, plots and predictions of a served model on labelled radiographs."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.cli._common import EXIT_INPUT_FAILURES, EXIT_OK, add_connection_arguments, connection_of
from radserve.settings import SETTINGS

if TYPE_CHECKING:
    from radserve.client.grpc_client import ConnectionOptions
    from radserve.clinical.labeled import LabeledSet

_LISTED = 20  # excluded rows printed (all of them are in evaluation.json)


@contextlib.contextmanager
def serving(args: argparse.Namespace) -> Iterator[ConnectionOptions]:
    """The connection to use.

    The flags' (``--url``, TLS, admin key), or an embedded server on free ports over
    ``--serve-repository`` (loopback, plaintext).
    """
    if args.serve_repository is None:
        yield connection_of(args)
        return
    from radserve.server_config.triton import TritonServer, free_ports

    with TritonServer(args.serve_repository, ports=free_ports()) as server:
        print(
            f"tritonserver ready on {server.grpc_url} (repository {args.serve_repository})", file=sys.stderr
        )
        yield replace(connection_of(args, server.grpc_url), tls=None, admin_key=None)


def add_server_arguments(command: argparse.ArgumentParser) -> None:
    add_connection_arguments(command)
    command.add_argument(
        "--serve-repository",
        type=Path,
        metavar="DIR",
        help="instead of --url: serve DIR with the embedded tritonserver for this run",
    )


def add_labeled_arguments(command: argparse.ArgumentParser) -> None:
    """Arguments of the verbs that classify labelled radiographs through a served model."""
    command.add_argument("paths", nargs="+", help="DICOM files and folders")
    command.add_argument("--model", required=True)
    command.add_argument("--truth", type=Path, required=True, help="CSV: sop_instance_uid or path, and label")
    command.add_argument("--label-column", help="the truth CSV's label column (default: label, else region)")
    add_server_arguments(command)
    command.add_argument("--max-in-flight", type=int, default=SETTINGS.client.max_in_flight)
    command.add_argument("--workers", type=int, default=SETTINGS.client.decode_workers)


def labeled_set(args: argparse.Namespace, connection: ConnectionOptions) -> LabeledSet:
    """Read the truth file, classify the inputs through the served model, join them."""
    from radserve.client.classify import ClassifyOptions
    from radserve.client.inputs import discover
    from radserve.clinical.labeled import classify_with_truth
    from radserve.clinical.truth import read_truth

    truth = read_truth(args.truth, args.label_column)
    inputs = discover(args.paths)
    if inputs.sidecars:
        print(f"left out {len(inputs.sidecars)} side file(s) in the folders", file=sys.stderr)
    options = ClassifyOptions(max_in_flight=args.max_in_flight, workers=args.workers)
    options = options.with_connection(connection)
    labeled = classify_with_truth(inputs.files, args.model, truth, options)
    excluded = labeled.excluded
    for row in excluded[:_LISTED]:
        frame = f"[{row['frame']}]" if row["frame"] else ""
        detail = f": {row['error']}" if row["error"] else ""
        print(f"excluded {row['path']}{frame} ({row['excluded']}){detail}", file=sys.stderr)
    if len(excluded) > _LISTED:
        print(f"... {len(excluded) - _LISTED} more excluded rows", file=sys.stderr)
    return labeled


def _evaluate(args: argparse.Namespace) -> int:
    from radserve.clinical.evaluate import summary_lines, write_evaluation

    with serving(args) as connection:
        labeled = labeled_set(args, connection)
    report = write_evaluation(labeled, args.out)
    print("\n".join(summary_lines(report)))
    print(f"wrote {args.out}/predictions.jsonl, evaluation.json, roc.png, reliability.png, confusion.png")
    return EXIT_INPUT_FAILURES if report["excluded"]["count"] else EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="measure a served model on labelled radiographs")
    add_labeled_arguments(evaluate)
    evaluate.add_argument("--out", type=Path, required=True, help="folder for predictions, report and plots")
    evaluate.set_defaults(run=_evaluate)
