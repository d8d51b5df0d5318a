"""``radserve serve``: the embedded tritonserver in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from radserve.cli._common import EXIT_OK, add_admin_key_argument
from radserve.errors import ConfigurationError, ServerError
from radserve.settings import SETTINGS


def _serve(args: argparse.Namespace) -> int:
    from radserve.server_config.shm import remove_stale_regions
    from radserve.server_config.triton import TritonServer
    from radserve.server_config.triton_security import ServerTls, check_exposure
    from radserve.settings import Ports

    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        raise ConfigurationError("TLS needs both --tls-cert and --tls-key")
    tls = ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    check_exposure(args.host, tls, args.insecure)
    removed = remove_stale_regions()
    print(f"removed {removed} stale shared-memory region(s) of a dead tritonserver from /dev/shm")
    server = TritonServer(
        args.repository,
        host=args.host,
        ports=Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        verbose=args.log_verbose,
        tls=tls,
        admin_key=args.admin_key,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(
            f"tritonserver ready (pid {server.pid}), repository {args.repository}\n"
            f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
            f"  log     {server.log_file}\nCtrl-C to stop.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not server.is_running():
                print(server.log_tail(), file=sys.stderr)
                raise ServerError(f"tritonserver exited unexpectedly (log above, in full: {server.log_file})")
        print("stopping tritonserver ...", flush=True)
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the embedded tritonserver until Ctrl-C")
    serve.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    serve.add_argument("--host", default=SETTINGS.host)
    serve.add_argument("--http-port", type=int, default=SETTINGS.ports.http)
    serve.add_argument("--grpc-port", type=int, default=SETTINGS.ports.grpc)
    serve.add_argument("--metrics-port", type=int, default=SETTINGS.ports.metrics)
    serve.add_argument("--log-verbose", type=int, default=0)
    security = serve.add_argument_group("security (docs/how-to/security.md)")
    security.add_argument("--tls-cert", type=Path, help="server certificate (PEM): gRPC over TLS")
    security.add_argument("--tls-key", type=Path, help="server key (PEM)")
    security.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA")
    security.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without TLS (trusted network)"
    )
    add_admin_key_argument(security, "put the repository/config/statistics/trace/logging/shm APIs behind it")
    serve.set_defaults(run=_serve)
