"""The ``radserve`` command line.

Verbs: synth, train, export, export-router, serve, classify, evaluate, calibrate, explain, bench,
listen, deploy, settings.

Each verb lives in its own module and imports the package it drives only when it runs, so
``radserve classify`` never loads PyTorch. Exit codes: 0 success; 1 the run finished but some inputs
failed; 2 the command could not run (bad arguments, server unreachable, export refused).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

from radserve.cli._common import EXIT_FAILURE, EXIT_INPUT_FAILURES, EXIT_OK
from radserve.errors import ConfigurationError, RadserveError

__all__ = ["EXIT_FAILURE", "EXIT_INPUT_FAILURES", "EXIT_OK", "build_parser", "main"]

_VERBS = (
    "_data",
    "_export",
    "_router",
    "_serve",
    "_classify",
    "_series",
    "_evaluate",
    "_calibrate",
    "_explain",
    "_bench",
    "_listen",
    "_deploy",
    "_settings",
    "_systems",
)


# The optional packages behind the verbs (pyproject.toml's extras): `pip install radserve` is the client.
_EXTRAS = {
    "torch": "export",
    "torchvision": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "server",
    "pytriton": "server",
    "sklearn": "clinical",
    "matplotlib": "clinical",
    "pycocotools": "clinical",
    "locust": "loadtest",
    "psutil": "loadtest",
    "nvidia": "gpu",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb (each module registers its own).

    Returns:
        The ``radserve`` parser.

    Raises:
        ConfigurationError: a ``RADSERVE_*`` variable is malformed (the verbs' defaults read the
            settings, parsed when the first verb module is imported).
    """
    parser = argparse.ArgumentParser(prog="radserve", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)
    for verb in _VERBS:
        importlib.import_module(f"radserve.cli.{verb}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``radserve`` command.

    The error boundary of the command line: a :class:`RadserveError` (bad settings and arguments
    included) ends in one line on stderr and exit code 2; ``-v`` adds its traceback.

    Args:
        argv: the arguments after ``radserve``; ``sys.argv[1:]`` when None.

    Returns:
        The exit code: 0, 1 (some inputs failed) or 2 (the command could not run).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = "radserve"
    try:
        try:
            args = build_parser().parse_args(arguments)
            command = f"radserve {args.command}"
            logging.basicConfig(
                level=logging.INFO if args.verbose else logging.WARNING,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            return int(args.run(args))
        except ModuleNotFoundError as error:  # a verb's package is imported when it runs
            extra = _EXTRAS.get((error.name or "").split(".")[0])
            if extra is None:
                raise
            raise ConfigurationError(
                f"needs {error.name} (not in `pip install radserve`): pip install 'radserve[{extra}]'"
            ) from error
    except RadserveError as error:
        if _verbose(arguments):
            traceback.print_exception(error, file=sys.stderr)
        print(f"{command}: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _verbose(arguments: Sequence[str]) -> bool:
    """Whether ``-v`` precedes the verb (read directly: the parser itself may be what failed)."""
    for argument in arguments:
        if not argument.startswith("-"):
            return False
        if argument in ("-v", "--verbose"):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
