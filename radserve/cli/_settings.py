"""``radserve settings``: every default and the value in effect (after ``RADSERVE_*`` overrides)."""

from __future__ import annotations

import argparse
import os

from radserve.cli._common import EXIT_OK


def _settings(args: argparse.Namespace) -> int:
    from radserve.settings import Settings, load_settings, settings_table

    effective = dict((name, value) for name, value, _ in settings_table(load_settings()))
    for name, default, unit in settings_table(Settings()):
        value = effective[name] if name in os.environ else default
        mark = " (from the environment)" if name in os.environ else ""
        print(f"{name:<48} {value}{mark}  [{unit}]")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    settings = commands.add_parser("settings", help="print every setting, its value and unit")
    settings.set_defaults(run=_settings)
