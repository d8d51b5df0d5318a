"""``radserve systems``: the served systems' contracts (radserve.systems)."""

from __future__ import annotations

import argparse

from radserve.cli._common import EXIT_OK


def _systems(args: argparse.Namespace) -> int:
    from radserve.systems import SYSTEMS, get_system

    chosen = [get_system(args.name)] if args.name else list(SYSTEMS.values())
    print("\n\n".join(system.describe() for system in chosen))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    systems = commands.add_parser("systems", help="list the served systems and their contracts")
    systems.add_argument("name", nargs="?", help="show one system")
    systems.set_defaults(run=_systems)
