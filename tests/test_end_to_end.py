"""synth → train → export → serve → classify over real gRPC, through the CLI as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from client.dicom.synthetic import REGIONS, SyntheticRecord
from server_config.triton import TritonServer
from server_config.triton_metrics import model_counters

TINY_MODEL = "tiny"  # exported by conftest's tiny_export


def _radserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_classify_folder_accounts_for_every_file_and_batches(
    triton: TritonServer, dicom_folder: Path, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    before = model_counters(triton.metrics_url, TINY_MODEL)
    done = _radserve(
        "classify",
        str(dicom_folder),
        "--model",
        TINY_MODEL,
        "--url",
        triton.grpc_url,
        "--output",
        str(output),
        "--max-in-flight",
        "8",
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(record.path for record in dicom_records)
    by_uid = {record.sop_instance_uid: record for record in dicom_records}
    for row in rows:
        assert row["status"] == "ok"
        assert row["sop_instance_uid"] in by_uid
        assert row["label"] in REGIONS
        assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-4
        assert row["latency_ms"] > 0
    assert "radiographs/s" in done.stdout
    served = model_counters(triton.metrics_url, TINY_MODEL) - before
    assert served.inferences == len(dicom_records)
    assert served.average_batch_size > 1.0  # the dynamic batcher formed batches


def test_bad_inputs_get_error_rows_and_exit_code_one(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("this is not a radiograph")
    missing = tmp_path / "missing.dcm"
    good = [record.path for record in dicom_records[:3]]
    output = tmp_path / "results.csv"
    done = _radserve(
        "classify",
        *good,
        str(not_dicom),
        str(missing),
        "--model",
        TINY_MODEL,
        "--url",
        triton.grpc_url,
        "--output",
        str(output),
    )
    assert done.returncode == 1, done.stderr
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 5
    errors = {row["path"]: row for row in rows if row["status"] == "error"}
    assert set(errors) == {str(not_dicom), str(missing)}
    for path, row in errors.items():
        assert row["error_reason"]
        assert path in row["error"]
    assert "2 errors" in done.stdout


def test_unknown_model_or_unreachable_server_is_a_clear_failure(
    triton: TritonServer, dicom_folder: Path
) -> None:
    done = _radserve("classify", str(dicom_folder), "--model", "nope", "--url", triton.grpc_url)
    assert done.returncode == 2
    assert "nope" in done.stderr
