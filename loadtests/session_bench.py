"""Start-up per call against one session: ``classify()`` calls vs one ``SyncSession``, and the listener's
C-STORE-to-row latency (docs/how-to/benchmarks.md, "Client session").

    python -m radserve.loadtests.session_bench --repository REPO --model NAME --dicom FOLDER \\
        [--before TREE] [--calls 20] [--files-per-call 5] [--instances 20] [--interval 1]

1. ``--calls`` calls of ``--files-per-call`` files each, three ways, each in a fresh interpreter and
   interleaved over ``--repeats`` rounds: one ``SyncSession`` for all calls; one ``classify_paths``
   per call (a session each: workers, channel, card and detector started per call); and, with
   ``--before TREE`` (a checkout of the code before sessions, e.g. ``git archive``), that tree's
   ``classify_paths`` per call.
2. ``radserve listen`` (this tree's, then TREE's) receiving one instance every ``--interval`` seconds
   from dcmtk's ``storescu``: latency from starting ``storescu`` to the instance's row in the results
   file, p50 and p95 (the first arrival reported apart: it opens the listener's session).

Figures are ratios within one run on a shared machine: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Each mode as a program run in a fresh interpreter: argv[1] is a JSON job, the output one JSON list
# of seconds per call. The per-call program uses only API that existed before sessions.
_PER_CALL = """
import json, sys, time
from radserve.client import ClassifyOptions, classify_paths
job = json.loads(sys.argv[1])
options = ClassifyOptions(url=job["url"], workers=job["workers"])
seconds = []
for batch in job["batches"]:
    started = time.perf_counter()
    rows, summary = classify_paths(batch, job["model"], options)
    assert summary.files == len(batch) and not summary.errors, summary
    seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""
_SESSION = """
import json, sys, time
from radserve.client import ClassifyOptions, SyncSession
job = json.loads(sys.argv[1])
options = ClassifyOptions(url=job["url"], workers=job["workers"])
seconds = []
started = time.perf_counter()
with SyncSession(job["model"], options) as session:
    opened = time.perf_counter() - started
    for batch in job["batches"]:
        started = time.perf_counter()
        run = session.classify(batch)
        rows = [row for file_rows in run for row in file_rows]
        assert run.summary.files == len(batch) and not run.summary.errors, run.summary
        seconds.append(time.perf_counter() - started)
seconds[0] += opened  # the session's start is paid by its first call
print(json.dumps(seconds))
"""


def package_path(tree: Path, work: Path) -> Path:
    """A folder to put first on ``PYTHONPATH`` so that ``radserve.*`` imports come from ``tree``.

    The source layout maps ``radserve.client`` to ``client/`` (and so on); this builds that layout with
    symbolic links, so the tree's code, its decode workers included, runs without being installed.
    """
    root = work / "site"
    package = root / "radserve"
    package.mkdir(parents=True)
    for item in (tree / "radserve").iterdir():
        (package / item.name).symlink_to(item.resolve())
    for name in ("client", "clinical", "export", "loadtests", "server_config", "synthetic"):
        (package / name).symlink_to((tree / name).resolve())
    return root


def _environment(site: Path | None) -> dict[str, str]:
    if site is None:
        return dict(os.environ)
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def client_source(site: Path | None, cwd: Path) -> str:
    """Where ``radserve.client`` is imported from with ``site`` first on the path (a check of the setup)."""
    program = "import radserve.client; print(radserve.client.__path__[0])"
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=_environment(site), cwd=cwd
    )
    return done.stdout.strip() or done.stderr


def _calls(program: str, job: dict[str, Any], site: Path | None, cwd: Path) -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", program, json.dumps(job)],
        capture_output=True,
        text=True,
        env=_environment(site),
        cwd=cwd,  # not the source tree: its folders would be imported first
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_calls(
    url: str, model: str, files: Sequence[Path], args: argparse.Namespace, before: Path | None, work: Path
) -> dict[str, Any]:
    """Part 1: seconds for all calls, per mode (median over rounds), and the ratios to one session."""
    batches = [
        [str(files[(call * args.files_per_call + i) % len(files)]) for i in range(args.files_per_call)]
        for call in range(args.calls)
    ]
    job = {"url": url, "model": model, "workers": args.workers, "batches": batches}
    modes: dict[str, tuple[str, Path | None]] = {"session": (_SESSION, None), "per_call": (_PER_CALL, None)}
    if before is not None:
        modes["per_call_before"] = (_PER_CALL, before)
    totals: dict[str, list[float]] = {mode: [] for mode in modes}
    per_call: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # interleaved: a change of load spreads over the modes
        for mode, (program, site) in modes.items():
            seconds = _calls(program, job, site, work)
            print(mode, round(sum(seconds), 3), flush=True)
            totals[mode].append(sum(seconds))
            per_call[mode].extend(seconds[1:])  # calls after the first: no start-up in a session
    median = {mode: statistics.median(values) for mode, values in totals.items()}
    return {
        "calls": args.calls,
        "files_per_call": args.files_per_call,
        "workers": args.workers,
        "total_seconds": {mode: round(value, 3) for mode, value in median.items()},
        "all_rounds_seconds": {mode: [round(v, 3) for v in values] for mode, values in totals.items()},
        "later_call_p50_ms": {
            mode: round(1000 * statistics.median(values), 1) for mode, values in per_call.items()
        },
        "ratio_to_session": {mode: round(value / median["session"], 2) for mode, value in median.items()},
    }


def _listener_latencies(
    url: str, model: str, files: Sequence[Path], args: argparse.Namespace, site: Path | None, work: Path
) -> list[float]:
    import pydicom

    from radserve.server_config.triton import free_ports

    port = free_ports().grpc
    output, spool = work / "results.jsonl", work / "spool"
    command = [
        sys.executable, "-m", "radserve", "listen", "--model", model, "--url", url, "--port", str(port),
        "--output", str(output), "--spool", str(spool), "--workers", str(args.workers),
    ]  # fmt: skip
    log = (work / "listen.log").open("wb")
    environment = _environment(site)
    listener = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=work)
    echo = ["echoscu", "-aec", "RADSERVE", "127.0.0.1", str(port)]
    try:
        while subprocess.run(echo, capture_output=True).returncode != 0:
            if listener.poll() is not None:
                raise RuntimeError((work / "listen.log").read_text())
            time.sleep(0.2)
        latencies = []
        for path in files[: args.instances]:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            sent = time.monotonic()
            store = ["storescu", "-aec", "RADSERVE", "127.0.0.1", str(port), str(path)]
            subprocess.run(store, capture_output=True, check=True)
            while not _has_row(output, uid):
                if time.monotonic() - sent > 300:
                    raise RuntimeError(f"no row for {path} after 300 s")
                time.sleep(0.005)
            latencies.append(time.monotonic() - sent)
            time.sleep(max(0.0, sent + args.interval - time.monotonic()))
        return latencies
    finally:
        listener.terminate()
        listener.wait(60)
        log.close()


def _has_row(output: Path, uid: str) -> bool:
    if not output.exists():
        return False
    return any(json.loads(line).get("sop_instance_uid") == uid for line in output.read_text().splitlines())


def measure_listener(
    url: str, model: str, files: Sequence[Path], args: argparse.Namespace, before: Path | None, work: Path
) -> dict[str, Any]:
    """Part 2: C-STORE-to-row latency of single instances, this tree's listener and TREE's."""
    figures: dict[str, Any] = {}
    for name, site in (("session", None), *((("before", before),) if before else ())):
        folder = work / f"listen-{name}"
        folder.mkdir()
        latencies = np.asarray(_listener_latencies(url, model, files, args, site, folder)) * 1000
        later = latencies[1:]
        figures[name] = {
            "first_ms": round(float(latencies[0]), 1),
            "p50_ms": round(float(np.percentile(later, 50)), 1),
            "p95_ms": round(float(np.percentile(later, 95)), 1),
            "instances": len(latencies),
        }
    if before:
        figures["p50_ratio_before_to_session"] = round(
            figures["before"]["p50_ms"] / figures["session"]["p50_ms"], 2
        )
    return figures


def _uncompressed(files: Sequence[Path]) -> list[Path]:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    plain = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    return [
        path
        for path in files
        if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID in plain
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repository", type=Path, required=True, help="served with the embedded tritonserver"
    )
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--dicom", type=Path, required=True, help="folder of DICOM files (distinct instances)"
    )
    parser.add_argument("--before", type=Path, help="a source tree of the code before sessions")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--files-per-call", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="decode workers per session")
    parser.add_argument("--instances", type=int, default=20, help="single instances sent to each listener")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between arrivals")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("calls", "listener"),
        default=["calls", "listener"],
        help="what to measure",
    )
    parser.add_argument("--out", type=Path, default=Path("build/session-bench.json"))
    args = parser.parse_args(argv)

    from radserve.client.inputs import discover
    from radserve.server_config.triton import TritonServer, free_ports

    files = discover([args.dicom]).files
    plain = _uncompressed(files)  # storescu proposes uncompressed transfer syntaxes only
    if "listener" in args.parts and len(plain) < args.instances:
        parser.error(
            f"{args.dicom} holds {len(plain)} uncompressed files; --instances needs {args.instances}"
        )
    if "listener" in args.parts and shutil.which("storescu") is None:
        parser.error("dcmtk's storescu is needed for the listener part (apt-get install dcmtk)")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="radserve-session-bench-") as temporary:
        work = Path(temporary)
        before = package_path(args.before, work) if args.before else None
        with TritonServer(args.repository, ports=free_ports()) as server:
            result: dict[str, Any] = {"model": args.model, "cpu_count": os.cpu_count()}
            result["client_source"] = {"session": client_source(None, work)}
            if before is not None:
                result["client_source"]["before"] = client_source(before, work)
            print(json.dumps(result["client_source"]), flush=True)
            if "listener" in args.parts:
                result["listener"] = measure_listener(server.grpc_url, args.model, plain, args, before, work)
                print(json.dumps(result["listener"]), flush=True)
            if "calls" in args.parts:
                result["calls"] = measure_calls(server.grpc_url, args.model, files, args, before, work)
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
