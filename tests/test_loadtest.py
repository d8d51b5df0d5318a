"""Locust against the real server: a smoke run exits cleanly with code 0, thresholds set code 1."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

from radserve.loadtests.run import locust_command
from radserve.server_config.triton import TritonServer

TINY_MODEL = "tiny"


def _locust(
    triton: TritonServer, dicom: Path, out: Path, seconds: int, *extra: str
) -> subprocess.CompletedProcess:
    command = locust_command(triton.grpc_url, TINY_MODEL, dicom, "smoke", out, extra)
    env = dict(os.environ, RADSERVE_SMOKE_SECONDS=str(seconds))
    # A hang after "Shutting down" (gRPC's gevent mode) would hit this timeout and fail the test.
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=env, cwd=out)


def test_locust_smoke_run_has_no_failures_and_exits_cleanly(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    done = _locust(triton, dicom_folder, tmp_path, 8)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "radserve load test PASS" in output
    assert "Shutting down (exit code 0)" in output
    rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "locust_stats.csv").open())}
    inference = rows[f"infer {TINY_MODEL}"]
    assert int(inference["Request Count"]) > 20
    assert int(inference["Failure Count"]) == 0
    assert (tmp_path / "locust.html").stat().st_size > 1000


def test_locust_threshold_breach_sets_exit_code_one(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    done = _locust(triton, dicom_folder, tmp_path, 2, "--max-p95-ms", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "radserve load test FAIL: p95" in done.stderr
