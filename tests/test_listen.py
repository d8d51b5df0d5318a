"""``radserve listen`` against dcmtk's real ``storescu``, ``echoscu`` and ``storescp``.

The listener runs as a user runs it (``python -m radserve listen``) in front of the real
tritonserver; SR documents are forwarded to a real ``storescp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.listen import Listener, ListenOptions
from radserve.client.results import ResultRow
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.dataset import SyntheticRecord, write_synthetic_set
from tests._certificates import self_signed

TINY_MODEL = "tiny"  # exported by conftest's tiny_export

pytestmark = pytest.mark.skipif(
    shutil.which("storescu") is None, reason="dcmtk is not installed (make test installs it as root)"
)


def _dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def _storescu(
    port: int, files: list[str], *options: str, calling: str = "PACS"
) -> subprocess.CompletedProcess[str]:
    return _dcmtk(
        "storescu", "-v", "-aet", calling, "-aec", "RADSERVE", *options, "127.0.0.1", str(port), *files
    )


# storescu proposes uncompressed syntaxes unless told which compressed one to propose; dcmtk 3.6.7
# predates HTJ2K, so those files travel by classify's folder path only (tests/test_end_to_end.py).
_STORESCU_PROPOSE = {
    ExplicitVRLittleEndian: (),
    RLELossless: ("-xr",),
    JPEGLSLossless: ("-xt",),
    JPEG2000Lossless: ("-xv",),
    JPEGLosslessSV1: ("-xs",),
}


def _send_by_syntax(port: int, records: list[SyntheticRecord]) -> set[str]:
    """Send each file with storescu proposing its transfer syntax; the SOP Instance UIDs sent."""
    sent = set()
    for syntax, options in _STORESCU_PROPOSE.items():
        group = [record for record in records if record.transfer_syntax == syntax]
        if group:
            done = _storescu(port, [record.path for record in group], *options)
            assert done.returncode == 0, done.stdout + done.stderr
            sent |= {record.sop_instance_uid for record in group}
    return sent


def _echo(port: int, called: str = "RADSERVE") -> int:
    return _dcmtk("echoscu", "-aet", "PACS", "-aec", called, "127.0.0.1", str(port)).returncode


def _rows(output: Path) -> list[dict]:
    if not output.exists():
        return []
    return [json.loads(line) for line in output.read_text().splitlines() if line.endswith("}")]


def _wait_for(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class _ListenProcess:
    """``python -m radserve listen`` on free ports; ``kill`` is a crash (SIGKILL)."""

    def __init__(self, triton: TritonServer, work: Path, *extra: str) -> None:
        ports = free_ports()
        self.port, self.metrics_port = ports.grpc, ports.metrics
        self.output = work / "results.jsonl"
        self.spool = work / "spool"
        self.log = work / "listen.log"
        self._args = [
            sys.executable, "-m", "radserve", "-v", "listen", "--model", TINY_MODEL, "--url", triton.grpc_url,
            "--port", str(self.port), "--output", str(self.output), "--spool", str(self.spool),
            "--metrics-port", str(self.metrics_port), "--workers", "1", *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> _ListenProcess:
        with self.log.open("ab") as log:
            # A session of its own: kill() ends its decoder processes too, as a crash of the host would.
            self.process = subprocess.Popen(
                self._args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        if self.process.poll() is not None:
            raise AssertionError(self.log.read_text())
        _wait_for(lambda: _echo(self.port) == 0,
                  60, "the listener to answer C-ECHO")  # fmt: skip
        return self

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as page:
            for line in page.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no series {name}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="module")
def report_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """dcmtk's ``storescp``: where the listener forwards its SR documents."""
    folder = tmp_path_factory.mktemp("received-reports")
    port = free_ports().grpc
    process = subprocess.Popen(["storescp", "-aet", "REPORTS", "-od", str(folder), str(port)])
    _wait_for(lambda: _echo(port, "REPORTS") == 0, 30)
    yield port, folder
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def listener(
    triton: TritonServer, tmp_path_factory: pytest.TempPathFactory, report_receiver: tuple[int, Path]
) -> Iterator[_ListenProcess]:
    work = tmp_path_factory.mktemp("listen")
    process = _ListenProcess(
        triton, work, "--allowed-calling", "PACS,MODALITY", "--sr-destination",
        f"REPORTS@127.0.0.1:{report_receiver[0]}",
    )  # fmt: skip
    try:
        yield process.start()
    finally:
        assert process.stop() == 0, process.log.read_text()


def _as_mr(record: SyntheticRecord, folder: Path) -> SyntheticRecord:
    """The same image as MR Image Storage (the future MRI system's SOP class)."""
    dataset = pydicom.dcmread(record.path)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    dataset.Modality = "MR"
    dataset.save_as(folder / "mr.dcm", enforce_file_format=True)
    return SyntheticRecord(
        str(folder / "mr.dcm"), record.region, dataset.SOPInstanceUID, record.transfer_syntax
    )


def test_storescu_folder_gets_one_row_per_instance_and_srs_are_forwarded(
    listener: _ListenProcess,
    dicom_records: list[SyntheticRecord],
    report_receiver: tuple[int, Path],
    triton: TritonServer,
    tmp_path: Path,
) -> None:
    uncompressed = next(r for r in dicom_records if r.transfer_syntax == ExplicitVRLittleEndian)
    mr = _as_mr(uncompressed, tmp_path)
    received = _send_by_syntax(listener.port, [*dicom_records, mr])
    assert mr.sop_instance_uid in received and len(received) > len(dicom_records) // 2
    _wait_for(lambda: {row["sop_instance_uid"] for row in _rows(listener.output)} >= received, what="rows")
    rows = [row for row in _rows(listener.output) if row["sop_instance_uid"] in received]
    assert Counter(row["sop_instance_uid"] for row in rows) == Counter(received)
    # the MR instance is stored, then refused by the radiograph model's input contract (one shared check)
    (refused,) = (row for row in rows if row["sop_instance_uid"] == mr.sop_instance_uid)
    assert refused["status"] == "not_accepted" and refused["error_reason"] == "modality", refused
    uids = received - {mr.sop_instance_uid}
    rows = [row for row in rows if row["sop_instance_uid"] in uids]
    assert {row["status"] for row in rows} == {"ok"}
    # The rows are the classify runner's: same label and probabilities as a folder run of the same files.
    direct: list[ResultRow] = []
    sent = [Path(r.path) for r in dicom_records if r.sop_instance_uid in uids]
    asyncio.run(classify(sent, TINY_MODEL, direct.extend, ClassifyOptions(url=triton.grpc_url, workers=1)))
    expected = {row.sop_instance_uid: (row.label, row.probabilities) for row in direct}
    assert {row["sop_instance_uid"]: (row["label"], row["probabilities"]) for row in rows} == expected
    assert listener.metric('radserve_listen_instances_total{outcome="received"}') >= len(uids)
    assert listener.metric('radserve_radiographs_total{model="tiny",outcome="ok"}') >= len(uids)
    # Every SR reached the destination (compressed and uncompressed sources alike), none is left.
    _wait_for(lambda: len(list(report_receiver[1].glob("SR*"))) >= len(uids), 60, "forwarded SRs")
    referenced = set()
    for report in report_receiver[1].glob("SR*"):
        evidence = pydicom.dcmread(report).CurrentRequestedProcedureEvidenceSequence[0]
        referenced.add(evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    assert referenced >= uids


def test_unaccepted_transfer_syntax_is_rejected_and_listener_survives(
    listener: _ListenProcess, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    source = pydicom.dcmread(
        next(r.path for r in dicom_records if r.transfer_syntax == ExplicitVRLittleEndian)
    )
    source.file_meta.TransferSyntaxUID = MPEG2MPML  # radserve does not decode video
    source.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    source.SOPInstanceUID = pydicom.uid.generate_uid()
    video = tmp_path / "video.dcm"
    source.save_as(video, enforce_file_format=True)
    sent = _storescu(listener.port, [str(video)], "-R", "-xm")
    assert sent.returncode != 0
    log = sent.stdout + sent.stderr
    assert "No Acceptable Presentation Contexts" in log, log
    assert _echo(listener.port) == 0
    assert source.SOPInstanceUID not in {row["sop_instance_uid"] for row in _rows(listener.output)}


def test_calling_ae_title_not_allowed_is_rejected(
    listener: _ListenProcess, dicom_records: list[SyntheticRecord]
) -> None:
    rejected_before = listener.metric('radserve_listen_associations_total{result="rejected"}')
    sent = _storescu(listener.port, [dicom_records[0].path], calling="INTRUDER")
    assert sent.returncode != 0
    assert "Association Rejected" in sent.stdout + sent.stderr
    assert listener.metric('radserve_listen_associations_total{result="rejected"}') == rejected_before + 1


def test_kill_mid_transfer_and_restart_loses_nothing(
    triton: TritonServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    records = write_synthetic_set(tmp_path / "dicom", 40, seed=14, matrix=(256, 208), compressed_share=0)
    files = [record.path for record in records]
    process = _ListenProcess(triton, tmp_path)
    request.addfinalizer(process.kill)
    process.start()
    sender = subprocess.Popen(["storescu", "-aec", "RADSERVE", "127.0.0.1", str(process.port), *files],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for(lambda: len(list(process.spool.glob("*.dcm"))) >= 3, 60, "instances in the spool")
        process.kill()  # a crash: no cleanup, possibly a torn last row
    finally:
        sender.wait(60)
    spooled = {path.stem for path in process.spool.glob("*.dcm")}
    assert spooled, "the crash came after the spool had drained: the test proved nothing"
    process.start()  # drains the spool
    _wait_for(lambda: not list(process.spool.glob("*.dcm")), what="the spool to drain")
    assert spooled <= {row["sop_instance_uid"] for row in _rows(process.output)}
    # The sender resends what it was never told was stored (here: everything); nothing is classified twice.
    assert _storescu(process.port, files).returncode == 0
    uids = Counter(record.sop_instance_uid for record in records)
    _wait_for(lambda: {row["sop_instance_uid"] for row in _rows(process.output)} >= set(uids), what="rows")
    assert process.stop() == 0
    assert Counter(row["sop_instance_uid"] for row in _rows(process.output)) == uids


@contextlib.contextmanager
def _in_process(options: ListenOptions) -> Iterator[Listener]:
    listener = Listener(options)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert listener.wait_ready(30)
        yield listener
    finally:
        listener.stop()
        thread.join(30)


def _unserved(tmp_path: Path, **options: Any) -> ListenOptions:
    """A listener whose classify URL has no server: nothing leaves its queue."""
    classify = ClassifyOptions(url=f"127.0.0.1:{free_ports().grpc}", ready_timeout_seconds=0.5)
    return ListenOptions(
        model=TINY_MODEL,
        output=tmp_path / "r.jsonl",
        spool=tmp_path / "spool",
        port=0,
        classify=classify,
        **options,
    )


def test_dicom_over_tls(tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    with _in_process(_unserved(tmp_path, ssl_context=context)) as listener:
        port = str(listener.port)
        secure = _dcmtk("echoscu", "+tla", "+cf", str(certificate), "-aec", "RADSERVE", "127.0.0.1", port)
        assert secure.returncode == 0, secure.stdout + secure.stderr
        assert _dcmtk("echoscu", "-aec", "RADSERVE", "127.0.0.1", port).returncode != 0  # no plain DICOM


def test_full_queue_answers_out_of_resources(dicom_records: list[SyntheticRecord], tmp_path: Path) -> None:
    options = _unserved(tmp_path, max_queue=3)
    uncompressed = [r.path for r in dicom_records if r.transfer_syntax == ExplicitVRLittleEndian]
    with _in_process(options) as listener:
        sent = _storescu(listener.port, uncompressed[:5], "--no-halt")
    assert "Refused: OutOfResources" in sent.stdout + sent.stderr, sent.stdout + sent.stderr

    def count(outcome: str) -> float | None:
        return listener.metrics.registry.get_sample_value(
            "radserve_listen_instances_total", {"outcome": outcome}
        )

    assert (count("received"), count("queue_full")) == (3, 2)
    assert len(list(options.spool.glob("*.dcm"))) == 3  # acknowledged ones stay for the next start


def test_the_listener_keeps_one_set_of_decode_workers_across_arrivals(
    triton: TritonServer,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pids = tmp_path / "pids"
    monkeypatch.setenv("RADSERVE_TEST_WORKER_PIDS", str(pids))  # tests/_decode_hooks.py writes there
    classify = ClassifyOptions(url=triton.grpc_url, workers=1, decode_worker_imports=("_decode_hooks",))
    output = tmp_path / "r.jsonl"
    options = ListenOptions(TINY_MODEL, output, spool=tmp_path / "spool", port=0, classify=classify)
    singles = [r for r in dicom_records if r.transfer_syntax == ExplicitVRLittleEndian][:3]
    with _in_process(options) as listener:
        for count, record in enumerate(singles, 1):  # one at a time: each finds the queue empty
            assert _storescu(listener.port, [record.path]).returncode == 0
            _wait_for(lambda count=count: len(_rows(output)) == count, what=f"row {count}")
    assert {row["status"] for row in _rows(output)} == {"ok"}
    assert len(set(pids.read_text().split())) == 1  # one worker, started on the first arrival only
