"""``radserve bench``'s options: the CLI builds its parser from them without importing the bench itself
(which loads the client, the engines and the plots only when a bench runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from radserve.loadtests.points import REPEATS

__all__ = ["CONCURRENCIES", "PER_REQUEST", "add_arguments"]

CONCURRENCIES = (1, 2, 4, 8, 16)
PER_REQUEST = (1, 8)  # radiographs per request: one, and the client's default packing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from radserve.settings import SETTINGS

    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="model name in the repository")
    target.add_argument(
        "--system",
        help="a served system (radserve systems) at its study input size: a random-init model of its "
        "architecture exported with its contract into a scratch repository (no naive baseline)",
    )
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="DICOM folder for requests and the end-to-end path")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help=f"served and naive concurrencies (default {CONCURRENCIES})"
    )
    parser.add_argument("--seconds", type=float, help="measuring time per run (default 5, quick 0.5)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per point (median and range)")
    parser.add_argument(
        "--images-per-request",
        type=int,
        nargs="+",
        help=f"radiographs per request of the served and naive paths (default {PER_REQUEST}, quick 1)",
    )
    parser.add_argument("--batches", type=int, nargs="+", help="raw batch sizes (default 1-32, quick 1 8)")
    parser.add_argument("--max-in-flight", type=int, default=SETTINGS.client.max_in_flight)
    parser.add_argument("--no-naive", action="store_true", help="skip the PyTorch eager baseline")
    parser.add_argument(
        "--quick", action="store_true", help="0.5 s runs, concurrency 1/4/16, raw batches 1/8"
    )
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="folder for bench.json/png")
    from radserve.loadtests.peers import PEERS

    parser.add_argument(
        "--peers",
        nargs="*",
        help=f"compare radserve with these serving systems instead ({', '.join(PEERS)}; none named: "
        "all), each in its own venv under --peer-environments; needs a loopback-only network namespace "
        "(make bench-peers)",
    )
    parser.add_argument("--peer-environments", type=Path, default=Path("build/peers"))
    parser.add_argument(
        "--engines",
        nargs="*",
        help="compare the raw CPU engines instead (onnxruntime, openvino, openvino-bf16; none named: all) "
        "on the model and its _int8 variant, with the reduced-precision gate against ONNX Runtime fp32",
    )
