"""The GPU check's end-to-end, systems, TensorRT and CPU-target stages: the parts that run on a CPU host.

The stages themselves need the GPU host (``check.sh``; ``--cpu-dry-run`` exercises them here, too slow
for the suite); these tests cover the pieces they are built from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pydicom
import pytest

from radserve.client.run_metrics import ClientMetrics
from radserve.loadtests.gpu_bundle import write_dicom_set
from radserve.loadtests.gpu_end_to_end import _quantile_ms, write_instances
from radserve.loadtests.gpu_report import render_markdown
from radserve.loadtests.gpu_tensorrt import probe


def test_instances_share_the_encoded_pixels_under_fresh_uids(tmp_path: Path) -> None:
    write_dicom_set(tmp_path / "source", matrix=(64, 48))
    source = tmp_path / "source" / "htj2k-lossless.dcm"
    paths = write_instances(source, tmp_path / "copies", 5)
    original = pydicom.dcmread(source)
    copies = [pydicom.dcmread(path) for path in paths]
    uids = {str(ds.SOPInstanceUID) for ds in copies}
    assert len(paths) == 5 and len(uids) == 5 and str(original.SOPInstanceUID) not in uids
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in copies)
    assert all(ds.PixelData == original.PixelData for ds in copies)
    assert all(ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID for ds in copies)


def test_quantiles_interpolate_within_buckets_as_promql_does() -> None:
    metrics = ClientMetrics()
    histogram = metrics.end_to_end_seconds.labels("m")
    for value in [0.001] * 50 + [0.2] * 50:  # half in the lowest bucket, half much higher
        histogram.observe(value)
    p25 = _quantile_ms(metrics, "radserve_end_to_end_seconds", "m", 0.25)
    p95 = _quantile_ms(metrics, "radserve_end_to_end_seconds", "m", 0.95)
    assert p25 is not None and p25 <= 1.0  # inside the bucket holding 1 ms
    assert p95 is not None and 100 < p95 <= 250  # inside the bucket holding 200 ms
    assert _quantile_ms(metrics, "radserve_end_to_end_seconds", "other", 0.5) is None


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_probe_says_how_tensorrt_is_absent() -> None:
    found = probe()
    assert found["tensorrt"] is None and "tensorrt" in found["tensorrt_error"]
    assert "CPUExecutionProvider" in found["onnxruntime_providers"]
    assert found["onnxruntime_trt"] is None


def test_report_renders_the_new_stages() -> None:
    run = {
        "files": 2000, "rows": 2000, "ok": 2000, "radiographs_per_s": 2100.5, "end_to_end_p50_ms": 40.0,
        "end_to_end_p95_ms": 90.0, "prepare_ms_per_file": 3.1, "request_ms": 20.0,
        "decoded_files": {"gpu": 2000},
    }  # fmt: skip
    report = {
        "dry_run": False,
        "stages": {
            "end_to_end": {
                "ok": True, "matrix": [1955, 1841], "bits_stored": 12, "images_per_request": 32,
                "cpu_decode_workers": 16,
                "syntaxes": {"htj2k-lossless": {"gpu": run, "cpu": run | {"radiographs_per_s": 700.0},
                                                "gpu_over_cpu": 3.0}},
            },
            "systems": {
                "ok": True, "served_point": [8, 16],
                "systems": {"fracture": {"architecture": "mobilenet_v3_small", "input": [1, 384, 384],
                                         "raw_img_per_s": {"1": 900.0, "8": 6000.0, "32": 20000.0},
                                         "served": {"img_per_s": 5400.0, "p99_ms": 30.0},
                                         "served_over_raw": 0.9}},
            },
            "tensorrt": {"ok": True, "probe": {"tensorrt": "10.13.0", "trtexec": None},
                         "plans": {"fp16": {"error": "ExportError: parse failed"}}},
            "cpu_target": {
                "ok": True, "cores": 16, "engine_limit_img_per_s": 1975.0,
                "engine_limit_layout": "16x1, batch 8",
                "points": [{"per_request": 8, "in_flight": 16, "img_per_s": 1800.0, "p50_ms": 60,
                            "p99_ms": 90, "over_engine_limit": 0.911}],
            },
        },
    }  # fmt: skip
    text = render_markdown(report)
    assert "| htj2k-lossless | gpu | 2000 | 2000 | 2100.5 | 40.0 | 90.0 |" in text and "| 3.0 |" in text
    assert (
        "| fracture | mobilenet_v3_small | 1x384x384 | 900.0 | 6000.0 | 20000.0 | 5400.0 | 30.0 | 0.9 |"
        in text
    )
    assert "tensorrt 10.13.0" in text and "trtexec absent" in text and "fp16 plan: ExportError" in text
    assert "engine limit 1975.0" in text and "| 8 | 16 | 1800.0 | 60 | 90 | 0.911 |" in text
