"""``radserve export-router``: a router (first-stage label → downstream model) over served models."""

from __future__ import annotations

import argparse
from pathlib import Path

from radserve.cli._common import EXIT_OK
from radserve.errors import RadserveError
from radserve.settings import SETTINGS


def _routes(pairs: list[str]) -> dict[str, str]:
    routes: dict[str, str] = {}
    for pair in pairs:
        label, _, model = pair.partition("=")
        if not label or not model:
            raise RadserveError(f"--route {pair!r}: expected LABEL=MODEL")
        if label in routes:
            raise RadserveError(f"--route: label {label!r} is routed twice")
        routes[label] = model
    return routes


def _export_router(args: argparse.Namespace) -> int:
    from radserve.export.router import export_router

    version_dir = export_router(args.repository, args.name, args.first, _routes(args.route))
    print(f"published router {version_dir}: {args.first} → " + ", ".join(args.route))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    router = commands.add_parser(
        "export-router",
        help="publish a router: a first-stage classifier's label picks the downstream model (Triton BLS)",
    )
    router.add_argument("name", help="the router's model name in the repository")
    router.add_argument("--first", required=True, help="the first-stage model (e.g. body-region)")
    router.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="LABEL=MODEL",
        help="route the first stage's LABEL to MODEL (repeat); labels without a route: first stage only",
    )
    router.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    router.set_defaults(run=_export_router)
