"""``radserve bench --quick`` and ``radserve tune --quick`` on the tiny model, over the real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radserve.export.pipeline import ExportResult
from radserve.loadtests.bench_report import BenchResult
from radserve.loadtests.points import Point, Run
from radserve.loadtests.tables import bench_table, tune_table

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
        "--quick", "--images-per-request", "1", "4", "--concurrency", "1", "4", "--seconds", "0.2",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    configs = [(c, k) for k in (1, 4) for c in (1, 4)]  # (requests in flight, radiographs per request)
    assert [(p["concurrency"], p["batch"]) for p in result["served"]] == configs
    assert [(p["concurrency"], p["batch"]) for p in result["naive"]] == configs  # the same as served
    for point in result["served"]:  # each request carried its radiographs: images = requests x per request
        assert all(run["images"] % point["batch"] == 0 for run in point["runs"])
    for point in (*result["raw"], *result["served"], *result["naive"], result["end_to_end"]):
        assert len(point["runs"]) == 3  # every point measured 3 times, every run kept
        low, high = point["images_per_second_range"]
        assert 0 < low <= point["images_per_second"] <= high
        assert point["p95_ms"] >= point["p50_ms"] > 0
    assert result["end_to_end"]["extra"]["errors"] == 0
    # the raw line: both layouts at every batch, and the best of them all
    cores = os.cpu_count() or 1
    layouts = sorted({f"1x{cores}", f"{cores}x1"})
    assert result["raw_layouts_tried"] == layouts == sorted({p["layout"] for p in result["raw"]})
    assert {(p["layout"], p["batch"]) for p in result["raw"]} == {(lay, b) for lay in layouts for b in (1, 8)}
    winner = max(result["raw"], key=lambda p: p["images_per_second"])
    assert result["raw_best"] == {k: winner[k] for k in ("layout", "batch", "images_per_second")}
    ratios = result["ratios"]
    served_best = max(p["images_per_second"] for p in result["served"])
    assert ratios["served_over_raw"] == round(served_best / winner["images_per_second"], 3)
    assert set(ratios["served_over_naive_per_concurrency"]) == {"1", "4", "1x4", "4x4"}
    assert (ratios["served_over_raw"] > 1.02) == bool(result["warnings"])
    assert result["naive_engine"] == "ThreadingHTTPServer + PyTorch eager fp32"
    # where the cores went at the best served point: every party's CPU per radiograph, and the bound
    profile = result["cpu_profile"]
    costs = profile["cpu_ms_per_image"]
    # tritonserver's own time (gRPC, the batcher) can round to no 10 ms clock tick in a 0.2 s run
    assert costs["client"] > 0 and costs["tritonserver"] >= 0 and costs["backends"] > 0
    assert costs["total"] == pytest.approx(
        costs["client"] + costs["tritonserver"] + costs["backends"], abs=2e-3
    )
    assert profile["served_over_raw_bound"] == pytest.approx(
        profile["raw_engine_cpu_ms_per_image"] / costs["total"], abs=2e-3
    )
    assert "CPU per radiograph" in done.stdout
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in ("raw", "served", "naive", "end_to_end", "served_over_raw"):
        assert path in done.stdout
    # the site's benchmark row is generated from this JSON (docs/measurements/bench.md)
    row = bench_table([result]).splitlines()[2]
    warned = " (see its warning)" if result["warnings"] else ""
    assert f"| {result['ratios']['served_over_raw']:.2f}{warned} |" in row
    assert f"({winner['layout']}, b{winner['batch']})" in row


def test_tune_quick_prints_the_best_configuration_within_budget(
    repository: Path, tiny_export: ExportResult, tmp_path: Path
) -> None:
    done = _radserve(
        "tune", TINY_MODEL, "--repository", str(repository), "--quick", "--no-engines", "--concurrency", "4",
        "--seconds", "0.2", "--max-seconds", "30", "--latency-budget-ms", "5000",
        "--out", str(tmp_path / "tune.json"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "best: instances" in done.stdout
    assert "BatchingDefaults(" in done.stdout
    tuned = json.loads((tmp_path / "tune.json").read_text())
    assert tuned["candidates"] and all(len(c["point"]["runs"]) == 3 for c in tuned["candidates"])
    within = [c for c in tuned["candidates"] if c["point"]["p95_ms"] <= 5000]
    chosen = max(within, key=lambda c: c["point"]["images_per_second"])  # the median picks
    assert tuned["best"] == {k: chosen[k] for k in ("instances", "threads", "queue_delay_us", "preferred")}
    assert tune_table(tuned).count("**yes**") == 1


def _point(path: str, rates: tuple[float, ...], batch: int = 1, layout: str = "", **extra: float) -> Point:
    return Point(path, 2, batch, [Run(round(rate * 10), 10.0) for rate in rates], layout, dict(extra))


def test_served_above_raw_warns_with_the_likely_cause() -> None:
    def result(served: Point, **changes: object) -> BenchResult:
        fields = {
            "model": "m", "architecture": "resnet18", "input_size": (224, 224), "precision": "fp32",
            "cpu_count": 2, "served_layout": "2x1", "raw": [_point("raw", (100, 100, 100), 8, "2x1")],
            "served": [served], "naive": [], "naive_precision": "", "end_to_end": None, "repeats": 3,
            "seconds": 5.0,
        } | changes  # fmt: skip
        return BenchResult(**fields)  # type: ignore[arg-type]

    assert result(_point("served", (101, 102, 101))).warnings() == []  # within 1.02
    above = _point("served", (110, 110, 110), average_batch_size=4.0)
    causes = {
        "larger than every raw batch": result(_point("served", (110, 110, 110), average_batch_size=16.0)),
        "was not among the raw layouts": result(above, served_layout="4x1"),
        "the machine is shared": result(above, load_before=3.0),
        "load changed during the run": result(_point("served", (100, 110, 130))),
        "other settings than the served model": result(above),
    }
    for cause, bench in causes.items():
        (warning,) = bench.warnings()
        assert warning.startswith("served/raw is 1.10") and cause in warning, warning
        assert bench.to_dict()["warnings"] == [warning]


def test_naive_fp16_engine_keeps_normalisation_and_softmax_in_float32() -> None:
    import torch

    from radserve.export.architectures import build_model
    from radserve.export.serving_graph import ServingGraph
    from radserve.loadtests.naive import eager_precision
    from radserve.loadtests.naive_server import HalfGraph
    from radserve.model_card import ModelCard

    assert [eager_precision(p) for p in ("fp32", "fp16", "int8")] == ["fp32", "fp16", "fp32"]
    torch.manual_seed(0)
    card = ModelCard("naive", "resnet18", ("a", "b", "c"), (64, 64))
    graph = ServingGraph(build_model("resnet18", 3), card).eval()
    image = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        reference = graph(image)
        half = HalfGraph(graph).eval()(image)
    assert half.dtype == torch.float32 and next(graph.network.parameters()).dtype == torch.float16
    torch.testing.assert_close(half.sum(dim=1), torch.ones(2))
    assert (half - reference).abs().max() < 0.01


def test_bench_system_serves_the_study_contract_at_its_input_size(tmp_path: Path) -> None:
    """``--system``: the study's architecture and input size, exported with the system's contract; the
    MRI system's requests are [1, 6, H, W] study tensors and it has no end-to-end folder path."""
    done = _radserve(
        "bench", "--system", "vertebral-fracture-mri", "--quick", "--repeats", "1", "--batches", "1",
        "--concurrency", "2", "--seconds", "0.3", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "bench.json").read_text())
    assert (result["model"], result["architecture"], result["input_size"]) == (
        "vertebral-fracture-mri", "resnet50", [224, 224]
    )  # fmt: skip
    assert result["served"][0]["images_per_second"] > 0 and result["raw"]
    assert result["naive"] == [] and result["end_to_end"] is None
    assert "served_over_raw" in result["ratios"]
