"""``make soak-listen``: storescu sending to ``radserve listen`` for a long while, Triton restarted twice.

    python -m radserve.loadtests.soak_listen --model demo --repository model_repository \\
        --dicom build/demo-dicom --seconds 600 --out build/soak-listen

storescu sends batches of the folder's files, each batch under fresh SOP Instance UIDs so that every
instance sent is a new one. At the end it waits for the listener's backlog to drain and prints the
instances acknowledged (C-STORE success), the ok rows and other rows (they must match: acknowledged
means classified), the instances/s the listener sustained, and its resident memory at start and end
(alone, and with its decode workers, which exist only while a round runs).
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from radserve.loadtests.soak import RESTARTS, rss_mib
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS

BATCH = 20  # files per storescu run


def _own_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` alone (its decode workers come and go with rounds), MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    raise LookupError(name)


class _Sender:
    """storescu in a loop, each batch renamed to fresh UIDs; counts the success responses."""

    def __init__(self, sources: list[Path], port: int, work: Path) -> None:
        self._sources, self._port, self._work = sources, port, work
        self.acknowledged = 0
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        batch_index = 0
        while not self._stop.is_set():
            folder = self._work / f"batch-{batch_index % 2}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            files = []
            for index in range(BATCH):
                dataset = pydicom.dcmread(self._sources[(batch_index * BATCH + index) % len(self._sources)])
                dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                files.append(str(folder / f"{index}.dcm"))
                dataset.save_as(files[-1], enforce_file_format=True)
            sent = subprocess.run(
                ["storescu", "-v", "--no-halt", "-aec", SETTINGS.listen.ae_title, "127.0.0.1",
                 str(self._port), *files],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            log = sent.stdout + sent.stderr
            self.acknowledged += log.count("Received Store Response (Success)")
            self.refused += log.count("Received Store Response (Refused")
            batch_index += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, required=True, help="folder of DICOM radiographs")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=Path("build/soak-listen"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sources = sorted(path for path in args.dicom.rglob("*.dcm"))
    if not sources:
        parser.error(f"no .dcm files under {args.dicom}")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    ports, listener_ports = free_ports(), free_ports()
    server = TritonServer(args.repository, ports=ports, log_file=args.out / "triton.log").start()
    output = args.out / "results.jsonl"
    command = [
        sys.executable, "-m", "radserve", "listen", "--model", args.model, "--url", server.grpc_url,
        "--port", str(listener_ports.grpc), "--metrics-port", str(listener_ports.metrics),
        "--output", str(output), "--spool", str(args.out / "spool"),
    ]  # fmt: skip
    with (args.out / "listen.log").open("wb") as log:
        listener = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    sender = _Sender(sources, listener_ports.grpc, args.out / "send")
    try:
        time.sleep(5)
        sender.start()
        started = time.monotonic()
        time.sleep(min(30.0, args.seconds / 10))
        rss_start = (_own_rss_mib(listener.pid), rss_mib(listener.pid))
        for restart in range(1, RESTARTS + 1):
            time.sleep(max(0.0, started + args.seconds * restart / (RESTARTS + 1) - time.monotonic()))
            server.stop()
            server = TritonServer(args.repository, ports=ports, log_file=args.out / "triton.log").start()
            elapsed = time.monotonic() - started
            print(f"soak-listen: Triton restarted ({restart}/{RESTARTS}) at {elapsed:.0f} s", flush=True)
        time.sleep(max(0.0, started + args.seconds - time.monotonic()))
        sender.stop()
        sent_seconds = time.monotonic() - started
        while _metric(listener_ports.metrics, "radserve_listen_queue_depth") > 0:
            time.sleep(1)
        drained_seconds = time.monotonic() - started
        rss_end = (_own_rss_mib(listener.pid), rss_mib(listener.pid))
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(120)
        server.stop()
    rows = [json.loads(line) for line in output.read_text().splitlines() if line.endswith("}")]
    ok = sum(row["status"] == "ok" for row in rows)
    summary = {
        "seconds_sending": round(sent_seconds),
        "triton_restarts": RESTARTS,
        "acknowledged": sender.acknowledged,
        "refused_0xA7xx": sender.refused,
        "ok_rows": ok,
        "other_rows": len(rows) - ok,
        "distinct_instances_in_rows": len({row["sop_instance_uid"] for row in rows}),
        "instances_per_second": round(len(rows) / drained_seconds, 2),
        "listener_rss_mib_start_end": [round(rss_start[0]), round(rss_end[0])],
        "with_decode_workers_mib_start_end": [round(rss_start[1]), round(rss_end[1])],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("soak-listen:", json.dumps(summary))
    return 0 if sender.acknowledged == len(rows) == summary["distinct_instances_in_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
