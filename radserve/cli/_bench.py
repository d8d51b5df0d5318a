"""``radserve bench`` and ``radserve tune``: measurements of the served path (radserve.loadtests)."""

from __future__ import annotations

import argparse


def _bench(args: argparse.Namespace) -> int:
    from radserve.loadtests import bench

    return bench.main(args)


def _tune(args: argparse.Namespace) -> int:
    from radserve.loadtests import tune

    return tune.main(args)


def register(commands: argparse._SubParsersAction) -> None:
    from radserve.loadtests.bench import add_arguments as add_bench_arguments
    from radserve.loadtests.tune import add_arguments as add_tune_arguments

    bench = commands.add_parser("bench", help="raw engine vs served vs naive baseline vs end-to-end")
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    tune = commands.add_parser("tune", help="sweep batching/instances/threads against a p95 budget")
    add_tune_arguments(tune)
    tune.set_defaults(run=_tune)
