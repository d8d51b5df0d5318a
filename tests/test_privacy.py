"""No patient attribute of the inputs in any output: rows (JSONL and CSV), SRs outside their patient
module, logs at -v, client and server Prometheus series, the server log, Locust reports."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import pydicom
import pytest

from radserve.server_config.triton import TritonServer
from radserve.synthetic.dataset import SyntheticRecord

PHI = {
    "PatientName": "Quistgaard^Roberta",
    "PatientID": "PID-771093",
    "PatientBirthDate": "19510203",
    "AccessionNumber": "ACC5501277",
    "InstitutionName": "Hollowmere General Hospital",
}
# The SR's patient module, and the accession number that files the SR in its study, repeat the source's.
SR_IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber")


def _radserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radserve", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def phi_inputs(dicom_records: list[SyntheticRecord], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of synthetic radiographs carrying PHI, named after the patient as some archives do."""
    folder = tmp_path_factory.mktemp("phi")
    for index, record in enumerate(dicom_records[:4]):
        dataset = pydicom.dcmread(record.path)
        for keyword, value in PHI.items():
            setattr(dataset, keyword, value)
        if index == 1:  # an invalid date: pydicom warns about it, quoting the value
            dataset.PatientBirthDate = PHI["PatientBirthDate"] + "X"
        dataset.save_as(folder / f"{PHI['PatientID']}-{index}.dcm")
    return folder


def _texts(folder: Path) -> dict[str, str]:
    return {str(path): path.read_text(errors="replace") for path in folder.rglob("*") if path.is_file()}


def _sr_outside_identifying_modules(path: Path) -> str:
    dataset = pydicom.dcmread(path)
    assert dataset.PatientID == PHI["PatientID"]  # the SR does carry its patient module
    for keyword in SR_IDENTIFYING:
        delattr(dataset, keyword)
    return str(dataset)


def test_no_patient_attribute_in_any_output(triton: TritonServer, phi_inputs: Path, tmp_path: Path) -> None:
    key = tmp_path / "pseudonym.key"
    key.write_bytes(os.urandom(32))
    out = tmp_path / "out"
    common = ("classify", str(phi_inputs), "--model", "tiny", "--url", triton.grpc_url)
    hidden = ("--pseudonymize-paths", str(key))
    runs = [
        _radserve("-v", *common, *hidden, "--output", str(out / "rows.jsonl"), "--sr-dir", str(out / "sr"),
                  "--metrics-file", str(out / "client.prom")),
        _radserve("-v", *common, *hidden, "--output", str(out / "rows.csv")),
    ]  # fmt: skip
    assert [run.returncode for run in runs] == [1, 0], runs[0].stderr  # 1: the SR of the bad date
    locust = subprocess.run(
        [sys.executable, "-m", "radserve", "loadtest", "--url", triton.grpc_url, "--model", "tiny",
         "--dicom", str(phi_inputs), "--load-profile", "smoke", "--out", str(out / "locust")],
        capture_output=True, text=True, timeout=300, env=os.environ | {"RADSERVE_SMOKE_SECONDS": "2"},
    )  # fmt: skip
    assert (out / "locust" / "locust_stats.csv").is_file(), locust.stderr
    srs = sorted((out / "sr").glob("*.dcm"))
    assert len(srs) == 3  # the file with the invalid birth date gets an error row, the others an SR
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in srs)

    outputs = {path: text for path, text in _texts(out).items() if not path.endswith(".dcm")}
    outputs |= {str(path): _sr_outside_identifying_modules(path) for path in srs}
    outputs |= {f"run {index} output": run.stdout + run.stderr for index, run in enumerate(runs)}
    outputs["locust output"] = locust.stdout + locust.stderr
    outputs["server log"] = Path(str(triton.log_file)).read_text(errors="replace")
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as reply:
        outputs["server metrics"] = reply.read().decode()
    assert "radserve_" in outputs[str(out / "client.prom")]
    leaks = [
        (keyword, where) for keyword, value in PHI.items() for where, text in outputs.items() if value in text
    ]
    assert not leaks, leaks
