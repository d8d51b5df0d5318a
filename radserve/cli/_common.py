"""What every verb of the command line shares: exit codes, connection and pseudonymization flags.

Every verb that calls a Triton server takes the same flags, parsed here into one
:class:`~radserve.client.grpc_client.ConnectionOptions` (docs/how-to/security.md, "Connection flags").
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.transport import ADMIN_KEY_ENV, client_tls

if TYPE_CHECKING:
    from radserve.client.grpc_client import ConnectionOptions
    from radserve.client.privacy import Pseudonyms

# 0 success; 1 the run finished but some inputs failed; 2 the command could not run.
EXIT_OK, EXIT_INPUT_FAILURES, EXIT_FAILURE = 0, 1, 2

# The flags add_connection_arguments adds (tests check every verb that calls a server has them all).
CONNECTION_FLAGS = (
    "--url",
    "--tls-ca",
    "--tls-cert",
    "--tls-key",
    "--admin-key",
    "--request-timeout",
    "--retry-give-up-after",
    "--ready-timeout",
)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_admin_key_argument(command: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    command.add_argument(
        "--admin-key", default=os.environ.get(ADMIN_KEY_ENV) or None, help=f"{what} (env {ADMIN_KEY_ENV})"
    )


def add_connection_arguments(command: argparse.ArgumentParser, external: bool = False) -> None:
    """The flags of every verb that calls a server: URLs, TLS, admin key, timeouts, retry.

    ``external``: the verb starts its own server unless ``--url`` names one (no default URL).
    """
    from radserve.settings import SETTINGS  # parsed inside the CLI's error boundary (radserve.cli.main)

    group = command.add_argument_group("connection to Triton (docs/how-to/security.md)")
    replicas = "Triton gRPC HOST:PORT; several, comma-separated, are balanced"
    if external:
        replicas += "; measure these running servers instead of starting one"
    group.add_argument("--url", default=None if external else SETTINGS.grpc_url, help=replicas)
    group.add_argument("--tls-ca", type=Path, help="CA certificate that signed the server's: use TLS")
    group.add_argument("--tls-cert", type=Path, help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", type=Path, help="client key, for mutual TLS")
    add_admin_key_argument(group, "key for servers whose model config is restricted")
    client = SETTINGS.client
    group.add_argument(
        "--request-timeout",
        type=_seconds,
        default=client.request_timeout_seconds,
        metavar="SECONDS",
        help="deadline of one request",
    )
    group.add_argument(
        "--retry-give-up-after",
        type=_seconds,
        default=client.retry_give_up_after_seconds,
        metavar="SECONDS",
        help="stop retrying a request after this long",
    )
    group.add_argument(
        "--ready-timeout",
        type=_seconds,
        default=client.ready_timeout_seconds,
        metavar="SECONDS",
        help="wait this long for the model to be ready on some server",
    )


def connection_of(args: argparse.Namespace, url: str | None = None) -> ConnectionOptions:
    """The :class:`ConnectionOptions` of the flags; ``url`` replaces ``--url`` (an embedded server's).

    Raises:
        ServerError: a client certificate without its key or the CA, or the reverse.
    """
    from radserve.client.grpc_client import ConnectionOptions, RetryPolicy

    retry = RetryPolicy(
        request_timeout_seconds=args.request_timeout, give_up_after_seconds=args.retry_give_up_after
    )
    return ConnectionOptions(
        url=[address for address in (url or args.url).split(",") if address],
        tls=client_tls(args.tls_ca, args.tls_cert, args.tls_key),
        admin_key=args.admin_key,
        retry=retry,
        ready_timeout_seconds=args.ready_timeout,
    )


def add_privacy_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--pseudonymize-paths",
        type=Path,
        metavar="KEYFILE",
        help="replace input paths in rows, logs and stderr by an HMAC under the secret in KEYFILE",
    )
    command.add_argument(
        "--pseudonymize-uids",
        type=Path,
        metavar="KEYFILE",
        help="replace Study and SOP Instance UIDs in rows by keyed 2.25 UIDs (PS3.15 Annex E, action U); "
        "the mapping goes to KEYFILE.uid-map.csv (0600)",
    )


def pseudonyms_of(
    args: argparse.Namespace, paths: Sequence[Path] = (), folders: Sequence[Path] = ()
) -> Pseudonyms:
    """The pseudonyms of ``--pseudonymize-paths`` / ``--pseudonymize-uids``.

    With the first, ``paths`` and every path below ``folders`` are hidden in log lines and on stderr
    from now on.
    """
    from radserve.client.privacy import PathPseudonyms, Pseudonyms, UidPseudonyms

    hide = None
    if args.pseudonymize_paths is not None:
        hide = PathPseudonyms.from_file(args.pseudonymize_paths, folders)
        hide.hide_in_logs(list(paths))
        hide.guard_stderr()
    uids = UidPseudonyms.from_file(args.pseudonymize_uids) if args.pseudonymize_uids is not None else None
    return Pseudonyms(hide, uids)
