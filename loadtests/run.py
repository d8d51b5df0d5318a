"""``make loadtest``: start the embedded tritonserver, run Locust headless against it, stop it.

    python -m radserve.loadtests.run --model demo --repository model_repository --dicom build/demo-dicom \\
        --load-profile smoke --out build/loadtest

Locust's exit code is this command's: 0 when the thresholds of loadtests/locustfile.py pass.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="folder of DICOM radiographs (synthetic if absent)")
    parser.add_argument("--load-profile", default="smoke", choices=("smoke", "ramp", "soak"))
    parser.add_argument("--out", type=Path, default=Path("build/loadtest"))
    parser.add_argument("--url", help="use this running server (HOST:PORT) instead of starting one")
    args, extra = parser.parse_known_args(argv)
    if args.url:
        command = locust_command(args.url, args.model, args.dicom, args.load_profile, args.out, extra)
        return subprocess.run(command, check=False).returncode
    with TritonServer(args.repository, ports=free_ports()) as server:
        print(f"tritonserver ready on {server.grpc_url}; locust profile {args.load_profile}", flush=True)
        command = locust_command(server.grpc_url, args.model, args.dicom, args.load_profile, args.out, extra)
        code = subprocess.run(command, check=False, timeout=3 * 3600).returncode
    print(f"reports: {args.out}/locust_stats.csv, {args.out}/locust.html; locust exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
