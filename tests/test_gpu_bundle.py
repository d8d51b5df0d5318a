"""The offline GPU check's bundle and report, on this CPU host (the check itself needs a GPU host)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radserve.export.hashing import file_sha256
from radserve.loadtests.gpu_bundle import MAX_BUNDLE_BYTES, _keep_member, write_dicom_set
from radserve.loadtests.gpu_report import render_markdown

BUNDLE = Path(__file__).resolve().parent.parent / "build" / "gpu-bundle"


def test_only_what_the_check_uses_is_packed() -> None:
    assert _keep_member("nvidia/nvimgcodec/nvimgcodec_impl.cpython-312-x86_64-linux-gnu.so")
    assert not _keep_member("nvidia/nvimgcodec/nvimgcodec_impl.cpython-313-x86_64-linux-gnu.so")
    assert _keep_member("nvidia/nvimgcodec/extensions/libnvjpeg2k_ext.so.0.9.0")
    assert not _keep_member("nvidia/nvimgcodec/extensions/libopencv_ext.so.0.9.0")
    assert not _keep_member("onnx/backend/test/data/node/test_abs/model.onnx")
    assert not _keep_member("nvidia/cu13/include/nvjpeg.h")
    assert _keep_member("nvidia/cu13/lib/libnvjpeg.so.13")


def test_dicom_set_holds_the_same_pixels_in_every_syntax(tmp_path: Path) -> None:
    records = write_dicom_set(tmp_path, matrix=(96, 80))
    syntaxes = {record["transfer_syntax"] for record in records}
    assert {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.201"} <= syntaxes
    assert sum(record["transfer_syntax"] == "1.2.840.10008.1.2.4.70" for record in records) == 2
    reference = pydicom.dcmread(tmp_path / "uncompressed.dcm").pixel_array
    j2k = pydicom.dcmread(tmp_path / "j2k-lossless.dcm")
    assert j2k.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(j2k.pixel_array, reference)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [record["file"] for record in manifest["files"]] == [record["file"] for record in records]


def test_report_names_every_stage_and_its_error() -> None:
    report = {
        "dry_run": False,
        "stages": {
            "environment": {
                "ok": True,
                "python": "3.12.3",
                "torch": "2.11.0",
                "cpu_count": 16,
                "gpu": "H200",
            },
            "raw": {"ok": True, "img_per_s": {"1": 2000.0, "128": 40000.0}, "wall_seconds": 20},
            "served": {
                "ok": False,
                "error": "stage served timed out after 200 s",
                "points": [
                    {"per_request": 128, "in_flight": 4, "img_per_s": 36000.0, "p50_ms": 14, "p99_ms": 20}
                ],
            },
        },
    }
    text = render_markdown(report)
    assert "| served | NO |" in text and "timed out after 200 s" in text
    assert "| 128 | 4 | 36,000 | 14 | 20 | 0.90 |" in text


def test_built_bundle_fits_and_holds_what_check_sh_unpacks() -> None:
    if not (BUNDLE / "MANIFEST.json").is_file():
        pytest.skip("build/gpu-bundle not built here: `make gpu-bundle` downloads the Python 3.12 wheels")
    files = {path.name: path for path in BUNDLE.iterdir()}
    assert sum(path.stat().st_size for path in files.values()) <= MAX_BUNDLE_BYTES
    assert {"check.sh", "tritonserver.tar.xz", "site-packages.tar.xz", "dicom.tar.xz"} <= files.keys()
    assert any(name.startswith("radserve-") and name.endswith(".whl") for name in files)
    for name, entry in json.loads((BUNDLE / "MANIFEST.json").read_text()).items():
        assert file_sha256(files[name]) == entry["sha256"], name
    with tarfile.open(files["tritonserver.tar.xz"]) as tar:
        names = tar.getnames()
    assert "pytriton/tritonserver/bin/tritonserver" in names
    stubs = {name.split("python_backend_stubs/")[1].split("/")[0] for name in names if "stubs/" in name}
    assert stubs == {"3.12"}
    assert not any("libpython3" in name for name in names)
    with tarfile.open(files["site-packages.tar.xz"]) as tar:
        packages = {name.split("/")[0] for name in tar.getnames()}
    assert {
        "pydicom",
        "tritonclient",
        "onnx",
        "nvidia",
        "ml_dtypes",
        "rapidjson.cpython-312-x86_64-linux-gnu.so",
    } <= packages
