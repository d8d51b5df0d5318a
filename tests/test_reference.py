"""Served equals reference: a CR-like synthetic file through ``radserve classify`` and the real
server gives the probabilities of the in-process pipeline (decode, display, resize, ONNX Runtime)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from radserve.client.flow import prepare_file
from radserve.export.pipeline import ExportResult
from radserve.server_config.triton import TritonServer
from radserve.synthetic.dataset import SyntheticRecord
from tests._reference import onnx_reference


def test_a_cr_file_end_to_end_matches_the_in_process_pipeline(
    triton: TritonServer, tiny_export: ExportResult, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    record = next(
        r for r in dicom_records if pydicom.dcmread(r.path, stop_before_pixels=True).Modality == "CR"
    )
    output = tmp_path / "row.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "radserve", "classify", record.path, "--model", "tiny",
         "--url", triton.grpc_url, "--output", str(output), "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in output.read_text().splitlines()]
    prepared = prepare_file(record.path, tiny_export.card)
    images = np.stack([item.image for item in prepared.radiographs])
    (expected,) = onnx_reference(tiny_export.version_dir / "model.onnx", images)
    served = np.array([row["probabilities"][label] for label in tiny_export.card.labels])
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)  # rows round to 6 decimals
    assert row["label"] == tiny_export.card.labels[int(expected.argmax())]
