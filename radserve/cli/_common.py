"""What every verb of the command line shares: exit codes, the client's TLS and admin-key flags."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from radserve.security import ADMIN_KEY_ENV, ClientTls, client_tls

# 0 success; 1 the run finished but some inputs failed; 2 the command could not run.
EXIT_OK, EXIT_INPUT_FAILURES, EXIT_FAILURE = 0, 1, 2


def add_admin_key_argument(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument(
        "--admin-key", default=os.environ.get(ADMIN_KEY_ENV) or None, help=f"{what} (env {ADMIN_KEY_ENV})"
    )


def add_client_security_arguments(command: argparse.ArgumentParser) -> None:
    """``--tls-ca [--tls-cert --tls-key]`` and ``--admin-key`` of every command that calls a server."""
    group = command.add_argument_group("security (docs/how-to/security.md)")
    group.add_argument("--tls-ca", type=Path, help="CA certificate that signed the server's: use TLS")
    group.add_argument("--tls-cert", type=Path, help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="client key, for mutual TLS")
    add_admin_key_argument(group, "key for servers whose model config is restricted")


def client_tls_of(args: argparse.Namespace) -> ClientTls | None:
    return client_tls(args.tls_ca, args.tls_cert, args.tls_key)
