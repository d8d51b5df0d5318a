"""``radserve loadtest``: Locust headless against a server: the embedded tritonserver it starts, or
the running one ``--url`` names (with the connection flags of every verb: TLS, admin key).

    radserve loadtest --model demo --repository model_repository --dicom build/demo-dicom \\
        --load-profile smoke --out build/loadtest [-- LOCUST OPTIONS]

Locust's exit code is this command's: 0 when the thresholds of loadtests/locustfile.py pass.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.errors import ConfigurationError
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS

if TYPE_CHECKING:  # annotations only: the CLI imports this module to build its parser
    from radserve.client.connection import ConnectionOptions

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def connection_arguments(connection: ConnectionOptions) -> list[str]:
    """The locust file's options for ``connection`` (its ``--grpc-tls-*``: Locust's own ``--tls-*``
    serve its web UI).

    Raises:
        ConfigurationError: ``connection`` names several servers (Locust drives one host).
    """
    if len(connection.urls) != 1:
        raise ConfigurationError(f"a load test drives one server, got --url {','.join(connection.urls)}")
    tls = connection.tls
    files = {"--grpc-tls-ca": tls.ca, "--grpc-tls-cert": tls.cert, "--grpc-tls-key": tls.key} if tls else {}
    arguments = [item for flag, path in files.items() if path is not None for item in (flag, str(path))]
    return arguments + (["--admin-key", connection.admin_key] if connection.admin_key else [])


def locust_command(
    host: str, model: str, dicom: Path | None, profile: str, out: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The headless locust command line writing CSV and HTML reports under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "--model",
        model,
        "--dicom",
        str(dicom or ""),
        "--load-profile",
        profile,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--stop-timeout",
        "10",
        *extra,
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``radserve loadtest`` besides the connection flags."""
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="folder of DICOM radiographs (synthetic if absent)")
    parser.add_argument("--load-profile", default="smoke", choices=("smoke", "ramp", "soak"))
    parser.add_argument("--out", type=Path, default=Path("build/loadtest"))
    parser.add_argument("locust", nargs=argparse.REMAINDER, help="after --: Locust's own options")


def main(args: argparse.Namespace, connection: ConnectionOptions | None = None) -> int:
    """Run Locust against ``connection``'s server, or an embedded one on ``args.repository``."""
    extra = [item for item in args.locust if item != "--"]
    if connection is not None:
        extra += connection_arguments(connection)
        command = locust_command(
            connection.urls[0], args.model, args.dicom, args.load_profile, args.out, extra
        )
        return subprocess.run(command, check=False).returncode
    with TritonServer(args.repository, ports=free_ports()) as server:
        print(f"tritonserver ready on {server.grpc_url}; locust profile {args.load_profile}", flush=True)
        command = locust_command(server.grpc_url, args.model, args.dicom, args.load_profile, args.out, extra)
        code = subprocess.run(command, check=False, timeout=3 * 3600).returncode
    print(f"reports: {args.out}/locust_stats.csv, {args.out}/locust.html; locust exit code {code}")
    return code
