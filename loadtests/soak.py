"""``make soak``: Locust for a long while against the embedded server, restarted twice meanwhile.

    python -m radserve.loadtests.soak --model demo --repository model_repository \\
        --dicom build/demo-dicom --seconds 600 --out build/soak

Prints requests, failures (the restarts cost some: requests in flight and those sent while the
server is down) and the resident memory of the server (tritonserver and its model stubs) and of the
client (the Locust process) at start and at end. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from radserve.loadtests.run import locust_command
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS

RESTARTS = 2
USERS = 8


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MiB."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
        total += int(rss) / 1024
    return total


def _totals(stats_csv: Path) -> tuple[int, int]:
    with stats_csv.open() as stream:
        row = next(row for row in csv.DictReader(stream) if row["Name"] == "Aggregated")
    return int(row["Request Count"]), int(row["Failure Count"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="folder of DICOM radiographs (synthetic if absent)")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=Path("build/soak"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server and Locust on the way out
    ports = free_ports()
    server = TritonServer(args.repository, ports=ports).start()
    # the restarts fail the requests in flight and those sent while the server is down
    extra = ["-u", str(USERS), "-r", str(USERS), "-t", f"{int(args.seconds)}s", "--max-failure-ratio", "0.05"]
    command = locust_command(server.grpc_url, args.model, args.dicom, "none", args.out, extra)
    locust = subprocess.Popen(command)
    started = time.monotonic()
    try:
        time.sleep(min(30.0, args.seconds / 10))  # warmed up: the start figures
        rss_start = (rss_mib(server.pid or 0), rss_mib(locust.pid))
        for restart in range(1, RESTARTS + 1):
            time.sleep(max(0.0, started + args.seconds * restart / (RESTARTS + 1) - time.monotonic()))
            server.stop()
            server = TritonServer(args.repository, ports=ports).start()
            print(
                f"soak: server restarted ({restart}/{RESTARTS}) at {time.monotonic() - started:.0f} s",
                flush=True,
            )
        time.sleep(max(0.0, started + args.seconds - 5 - time.monotonic()))
        rss_end = (rss_mib(server.pid or 0), rss_mib(locust.pid))
        code = locust.wait(timeout=120)
    finally:
        if locust.poll() is None:
            locust.terminate()
            locust.wait(timeout=60)
        server.stop()
    requests, failures = _totals(args.out / "locust_stats.csv")
    print(f"soak: {args.seconds:.0f} s, {RESTARTS} server restarts, {requests} requests, {failures} failures")
    for name, start, end in (("server", rss_start[0], rss_end[0]), ("client", rss_start[1], rss_end[1])):
        growth = (end / start - 1) * 100
        print(f"soak: {name} RSS {start:.0f} MiB at start, {end:.0f} MiB at end ({growth:+.1f} %)")
    return code


if __name__ == "__main__":
    sys.exit(main())
