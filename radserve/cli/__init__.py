"""The ``radserve`` command line.

Verbs: synth, train, export, export-router, serve, classify, evaluate, calibrate, explain, bench,
listen, deploy, settings.

Each verb lives in its own module and imports the package it drives only when it runs, so
``radserve classify`` never loads PyTorch. Exit codes: 0 success; 1 the run finished but some inputs
failed; 2 the command could not run (bad arguments, server unreachable, export refused).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from radserve.cli import (
    _bench,
    _calibrate,
    _classify,
    _data,
    _deploy,
    _evaluate,
    _explain,
    _export,
    _listen,
    _router,
    _series,
    _serve,
    _settings,
    _systems,
)
from radserve.cli._common import EXIT_FAILURE, EXIT_INPUT_FAILURES, EXIT_OK
from radserve.errors import RadserveError

__all__ = ["EXIT_FAILURE", "EXIT_INPUT_FAILURES", "EXIT_OK", "build_parser", "main"]

_VERBS = (
    _data,
    _export,
    _router,
    _serve,
    _classify,
    _series,
    _evaluate,
    _calibrate,
    _explain,
    _bench,
    _listen,
    _deploy,
    _settings,
    _systems,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb (each module registers its own)."""
    parser = argparse.ArgumentParser(prog="radserve", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)
    for verb in _VERBS:
        verb.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``radserve`` command; its exit code."""
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
