"""``radserve bench --quick`` and ``radserve tune --quick`` on the tiny model, over the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from radserve.export.pipeline import ExportResult

TINY_MODEL = "tiny"


def _radserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radserve", *args], capture_output=True, text=True, timeout=180
    )


def test_bench_quick_compares_raw_served_naive_and_end_to_end(
    repository: Path, tiny_export: ExportResult, dicom_folder: Path, tmp_path: Path
) -> None:
    done = _radserve(
        "bench", "--model", TINY_MODEL, "--repository", str(repository), "--dicom", str(dicom_folder),
        "--quick", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [p["concurrency"] for p in result["served"]] == [1, 4, 16]
    assert all(p["images_per_second"] > 0 and p["p95_ms"] >= p["p50_ms"] > 0 for p in result["served"])
    assert result["raw"] and result["naive"]["images_per_second"] > 0
    assert result["end_to_end"]["images_per_second"] > 0 and result["end_to_end"]["extra"]["errors"] == 0
    assert set(result["ratios"]) == {"served_over_raw", "served_over_naive", "end_to_end_over_served"}
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in ("raw", "served", "naive", "end_to_end", "served_over_raw"):
        assert path in done.stdout


def test_tune_quick_prints_the_best_configuration_within_budget(
    repository: Path, tiny_export: ExportResult
) -> None:
    done = _radserve(
        "tune", TINY_MODEL, "--repository", str(repository), "--quick", "--concurrency", "4",
        "--seconds", "1", "--max-seconds", "15", "--latency-budget-ms", "5000",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best: instances" in done.stdout
    assert "BatchingDefaults(" in done.stdout
