"""``radserve bench``, ``loadtest`` and ``tune``: measurements of the served path (radserve.loadtests)."""

from __future__ import annotations

import argparse

from radserve.cli._common import add_connection_arguments, connection_of


def _bench(args: argparse.Namespace) -> int:
    from radserve.loadtests import bench

    return bench.main(args, connection_of(args) if args.url else None)


def _tune(args: argparse.Namespace) -> int:
    from radserve.loadtests import tune

    return tune.main(args)


def _loadtest(args: argparse.Namespace) -> int:
    from radserve.loadtests import run

    return run.main(args, connection_of(args) if args.url else None)


def register(commands: argparse._SubParsersAction) -> None:
    from radserve.loadtests.bench_options import add_arguments as add_bench_arguments
    from radserve.loadtests.run import add_arguments as add_loadtest_arguments
    from radserve.loadtests.tune import add_arguments as add_tune_arguments

    bench = commands.add_parser("bench", help="raw engine vs served vs naive baseline vs end-to-end")
    add_bench_arguments(bench)
    add_connection_arguments(bench, external=True)
    bench.set_defaults(run=_bench)
    loadtest = commands.add_parser("loadtest", help="Locust against the served model (make loadtest)")
    add_loadtest_arguments(loadtest)
    add_connection_arguments(loadtest, external=True)
    loadtest.set_defaults(run=_loadtest)
    tune = commands.add_parser("tune", help="sweep batching/instances/threads against a p95 budget")
    add_tune_arguments(tune)
    tune.set_defaults(run=_tune)
