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

from radserve.client.flow import PreparedFile
from radserve.export.pipeline import ExportResult
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


MARKER = "Quistgaard-Roberta-7741"  # a patient's name in the spool's folder, as some sites name them


def test_listener_hides_real_paths_and_uids_on_every_path(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    """``listen --pseudonymize-paths --pseudonymize-uids`` at ``-v``: an instance quarantined after its
    SR writing raised (tracebacks), a corrupt instance (an error row naming the file), an instance whose
    decode worker fails unexpectedly (the worker logs the file with a traceback to its stderr), and one
    that classifies. The marker in the spool's folder reaches no row, log line, traceback, worker stderr
    or audit line; no received UID reaches a row, and the mapping file holds them all."""
    import shutil
    import signal

    from radserve.server_config.triton import free_ports
    from tests.test_listen import _echo, _rows, _storescu, _wait_for

    if shutil.which("storescu") is None:
        pytest.skip("dcmtk is not installed (make test installs it as root)")
    private, out = tmp_path / MARKER, tmp_path / "out"
    private.mkdir()
    out.mkdir()
    (private / "reports").write_text("not a folder")  # writing SRs raises until it is a folder
    key = out / "site.key"
    key.write_bytes(os.urandom(32))
    plain = [
        record for record in dicom_records if record.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian
    ]
    quarantined, ok, corrupt, faulty = (pydicom.dcmread(record.path) for record in plain[:4])
    corrupt.PixelData = corrupt.PixelData[: len(corrupt.PixelData) // 3]  # truncated pixel data
    faulty_uid = pydicom.uid.generate_uid(prefix=None) + ".9999"  # the spool file's name ends in .9999.dcm
    faulty.SOPInstanceUID = faulty.file_meta.MediaStorageSOPInstanceUID = faulty_uid
    sent = {}
    for name, dataset in {"quarantined": quarantined, "ok": ok, "corrupt": corrupt, "faulty": faulty}.items():
        dataset.save_as(out / f"{name}.dcm", enforce_file_format=True)
        sent[name] = str(dataset.SOPInstanceUID)
    port = free_ports().grpc
    hooks = [str(Path(__file__).parent / "_worker_fault"), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, hooks)),
        "RADSERVE_TEST_WORKER_FAULT": ".9999.dcm",
        "RADSERVE_LISTEN_MAX_FAILURES": "2", "RADSERVE_LISTEN_RETRY_INITIAL_SECONDS": "0.1",
        "RADSERVE_LISTEN_RETRY_MAX_SECONDS": "0.2",
    }  # fmt: skip
    log = out / "listen.log"
    with log.open("wb") as stream:
        listener = subprocess.Popen(
            [sys.executable, "-m", "radserve", "-v", "listen", "--model", "tiny", "--url", triton.grpc_url,
             "--port", str(port), "--output", str(out / "rows.jsonl"), "--spool", str(private / "spool"),
             "--sr-dir", str(private / "reports"), "--workers", "1", "--audit-log", str(out / "audit.jsonl"),
             "--pseudonymize-paths", str(key), "--pseudonymize-uids", str(key)],
            stdout=stream, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        _wait_for(lambda: _echo(port) == 0, 60, "the listener to answer C-ECHO")
        assert _storescu(port, [str(out / "quarantined.dcm")]).returncode == 0
        _wait_for(lambda: len(_rows(out / "rows.jsonl")) == 1, what="the quarantine row")
        (private / "reports").unlink()
        (private / "reports").mkdir()
        assert (
            _storescu(port, [str(out / f"{name}.dcm") for name in ("ok", "corrupt", "faulty")]).returncode
            == 0
        )
        _wait_for(lambda: len(_rows(out / "rows.jsonl")) == 4, what="a row per instance")
    finally:
        listener.send_signal(signal.SIGTERM)
        assert listener.wait(60) == 0, log.read_text()
    rows = _rows(out / "rows.jsonl")
    text = log.read_text(errors="replace")
    assert "Traceback" in text and "FileExistsError" in text  # the SR failures' tracebacks, at -v
    assert "simulated codec fault reading path-" in text  # the decode worker's stderr, paths hidden
    mapping = key.with_name(f"{key.name}.uid-map.csv")  # original,replacement: apart from the rows
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600
    replaced = dict(line.split(",") for line in mapping.read_text().splitlines()[1:])
    outcomes = sorted((row["status"], row["error_reason"]) for row in rows)
    assert len(outcomes) == 4 and outcomes.count(("error", "internal_error")) == 2 and ("ok", "") in outcomes
    assert outcomes.count(("ok", "")) == 1, outcomes  # the corrupt instance's row is an input error
    # Rows that carry a UID carry its replacement (a row of an unreadable file carries none).
    assert {sent["ok"], sent["quarantined"]} <= set(replaced) <= set(sent.values())
    assert all(uid.startswith("2.25.") for uid in replaced.values())
    assert {row["sop_instance_uid"] for row in rows} - {""} == set(replaced.values())
    assert all(row["path"].startswith("path-") for row in rows)
    rows_text = (out / "rows.jsonl").read_text()
    assert not [uid for uid in sent.values() if uid in rows_text]
    for where, body in {"log": text, "rows": rows_text, "audit": (out / "audit.jsonl").read_text()}.items():
        assert MARKER not in body, where


def test_classify_replaces_uids_in_rows_keeping_the_mapping_apart(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    """PS3.15 Annex E, action U: each UID replaced by a non-empty UID, the same one for the same UID (the
    key makes it reproducible), in the UUID-derived root 2.25; the mapping only in KEYFILE.uid-map.csv."""
    import json
    import uuid

    from radserve.cli import main
    from radserve.client.privacy import UidPseudonyms

    key = tmp_path / "site.key"
    key.write_bytes(os.urandom(32))
    files = [record.path for record in dicom_records[:3]]
    output = tmp_path / "rows.jsonl"
    argv = ["classify", *files, "--model", "tiny", "--url", triton.grpc_url, "--workers", "1", "-q"]
    assert main([*argv, "--pseudonymize-uids", str(key), "--output", str(output)]) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    originals = {record.sop_instance_uid for record in dicom_records[:3]}
    assert not [uid for uid in originals if uid in output.read_text()]
    mapping = key.with_name(f"{key.name}.uid-map.csv")
    assert stat.S_IMODE(mapping.stat().st_mode) == 0o600
    replaced = dict(line.split(",") for line in mapping.read_text().splitlines()[1:])
    assert set(replaced) == originals and {row["sop_instance_uid"] for row in rows} == set(replaced.values())
    again = UidPseudonyms.from_file(key)  # another process with the same key: the same replacements
    assert {uid: again(uid) for uid in originals} == replaced
    for replacement in replaced.values():
        assert replacement.startswith("2.25.") and len(replacement) <= 64
        assert uuid.UUID(int=int(replacement.removeprefix("2.25."))).version == 8
    assert len(mapping.read_text().splitlines()) == 1 + len(originals)  # each pair once


def test_decode_workers_stderr_reaches_this_process_only_through_hide(
    tiny_export: ExportResult, dicom_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decode worker's stderr (its log of an unexpected failure: the file's path and a traceback) is
    relayed line by line through ``hide`` (the layer under the command line's guard of stderr)."""
    import asyncio
    import shutil

    from radserve.client.decode_pool import DecodePool
    from radserve.client.privacy import PathPseudonyms

    folder = tmp_path / MARKER
    folder.mkdir()
    internal = folder / "internal.dcm"  # tests/_decode_hooks.py: its resize step raises ZeroDivisionError
    shutil.copyfile(sorted(dicom_folder.rglob("*.dcm"))[0], internal)
    hide = PathPseudonyms(os.urandom(32), [folder]).hide

    async def prepare() -> PreparedFile:
        async with DecodePool(1, ("_decode_hooks",), hide=hide) as pool:
            return await pool.prepare(str(internal), tiny_export.card)

    prepared = asyncio.run(prepare())
    assert prepared.error_reason == "internal_error" and MARKER in prepared.error  # the row is hidden later
    relayed = capsys.readouterr().err
    assert "unexpected failure on path-" in relayed and "ZeroDivisionError" in relayed, relayed
    assert MARKER not in relayed
