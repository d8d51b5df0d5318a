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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, ComputedRadiographyImageStorage, Verification

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.grpc_client import RetryPolicy
from radserve.client.listen import Destination, Listener, ListenerMetrics, ListenOptions
from radserve.client.listen.audit import AuditLog
from radserve.client.listen.forward import ReportForwarder
from radserve.client.listen.scp import AssociationLimits
from radserve.client.listen.spool import Spool
from radserve.client.results import ResultRow
from radserve.errors import RadserveError
from radserve.export.model_config import ServingOptions
from radserve.export.pipeline import ExportResult
from radserve.export.repository import publish
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS
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

    def __init__(
        self, triton: TritonServer, work: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self._env = {**os.environ, **(env or {})}
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
                self._args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self._env
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
    # MR is not negotiated: the PACS keeps the instance instead of hearing success for it
    refused = _storescu(listener.port, [mr.path])
    assert refused.returncode != 0 and "No presentation context" in refused.stdout + refused.stderr, (
        refused.stdout + refused.stderr
    )
    uids = _send_by_syntax(listener.port, dicom_records)
    assert len(uids) > len(dicom_records) // 2
    _wait_for(lambda: {row["sop_instance_uid"] for row in _rows(listener.output)} >= uids, what="rows")
    rows = [row for row in _rows(listener.output) if row["sop_instance_uid"] in uids]
    assert Counter(row["sop_instance_uid"] for row in rows) == Counter(uids)
    assert mr.sop_instance_uid not in {row["sop_instance_uid"] for row in _rows(listener.output)}
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


# -- durability: acknowledged means classified ------------------------------------------------------


def _uncompressed(records: list[SyntheticRecord]) -> list[SyntheticRecord]:
    return [r for r in records if r.transfer_syntax == ExplicitVRLittleEndian]


def test_triton_down_longer_than_the_retry_window_loses_nothing(
    repository: Path, tiny_export: ExportResult, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    records = write_synthetic_set(tmp_path / "dicom", 11, seed=24, matrix=(256, 208), compressed_share=0)
    server = TritonServer(repository, ports=free_ports(), log_file=tmp_path / "triton.log").start()
    request.addfinalizer(server.stop)
    # The client gives up on the server within about a second: far shorter than the outage below.
    short = {
        "RADSERVE_CLIENT_RETRY_GIVE_UP_AFTER_SECONDS": "1", "RADSERVE_CLIENT_READY_TIMEOUT_SECONDS": "1",
        "RADSERVE_LISTEN_RETRY_INITIAL_SECONDS": "0.2", "RADSERVE_LISTEN_RETRY_MAX_SECONDS": "1",
    }  # fmt: skip
    process = _ListenProcess(server, tmp_path, env=short)
    request.addfinalizer(process.kill)
    process.start()
    assert _storescu(process.port, [records[0].path]).returncode == 0
    _wait_for(lambda: len(_rows(process.output)) == 1, what="the first row")
    server.stop()
    sent = _storescu(process.port, [record.path for record in records[1:]])
    assert sent.returncode == 0, sent.stdout + sent.stderr  # all ten acknowledged while Triton is away
    _wait_for(
        lambda: (
            process.log.read_text().count("not classified (") + process.log.read_text().count("round failed")
            >= 3
        ),
        what="the listener to retry while the server is down",
    )
    assert process.metric("radserve_listen_queue_depth") == 10
    assert process.metric("radserve_listen_backlog_oldest_seconds") > 0
    server.start()
    _wait_for(lambda: len(_rows(process.output)) >= 11, 180, "rows once the server is back")
    assert process.stop() == 0, process.log.read_text()
    rows = _rows(process.output)
    assert Counter(row["sop_instance_uid"] for row in rows) == Counter(r.sop_instance_uid for r in records)
    assert {row["status"] for row in rows} == {"ok"}, rows
    assert not list(process.spool.glob("*.dcm"))


def test_second_owner_of_results_or_spool_is_refused(
    dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    options = _unserved(tmp_path)
    with _in_process(options) as first:
        assert _storescu(first.port, [_uncompressed(dicom_records)[0].path]).returncode == 0
        before = options.output.read_bytes() if options.output.exists() else b""
        listen = [sys.executable, "-m", "radserve", "listen", "--model", TINY_MODEL, "--port", "0"]
        output, spool = ["--output", str(options.output)], ["--spool", str(options.spool)]
        tries = {
            "listener, same results": [*listen, *output, "--spool", str(tmp_path / "other")],
            "listener, same spool": [*listen, "--output", str(tmp_path / "other.jsonl"), *spool],
            "classify --resume": [sys.executable, "-m", "radserve", "classify", "--model", TINY_MODEL,
                                  "--url", "127.0.0.1:1", "--resume", *output, dicom_records[1].path],
        }  # fmt: skip
        for what, command in tries.items():
            refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert refused.returncode != 0, what
            lines = refused.stderr.strip().splitlines()
            assert len(lines) == 1 and "in use by another radserve process" in lines[0], (what, lines)
        with pytest.raises(RadserveError, match="in use"):
            Listener(options)
        # the first listener's file was neither rewritten nor swapped: same inode, same bytes
        assert options.output.read_bytes().startswith(before)
        assert len(list(options.spool.glob("*.dcm"))) == 1


def test_files_holding_patient_data_are_private_under_umask_022(
    dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    previous = os.umask(0o022)
    try:
        options = _unserved(tmp_path)
        with _in_process(options) as listener:
            assert _storescu(listener.port, [_uncompressed(dicom_records)[0].path]).returncode == 0
    finally:
        os.umask(previous)
    (spooled,) = options.spool.glob("*.dcm")
    assert oct(options.spool.stat().st_mode & 0o777) == "0o700"
    assert oct(spooled.stat().st_mode & 0o777) == "0o600"
    assert oct(options.output.stat().st_mode & 0o777) == "0o600"


def test_an_instance_that_keeps_failing_is_quarantined_and_the_listener_goes_on(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    """SR writing raises (the SR folder is a file: OSError, not an input error) for two instances."""
    blocked = tmp_path / "reports"
    blocked.write_text("not a folder")
    classify = ClassifyOptions(url=triton.grpc_url, workers=1, sr_dir=blocked)
    options = ListenOptions(
        model=TINY_MODEL, output=tmp_path / "r.jsonl", spool=tmp_path / "spool", port=0, classify=classify,
        retry_initial_seconds=0.1, retry_max_seconds=0.2, max_failures=2,
    )  # fmt: skip
    failing, later = _uncompressed(dicom_records)[:2], _uncompressed(dicom_records)[2]
    previous = os.umask(0o022)
    try:
        with _in_process(options) as listener:
            assert _storescu(listener.port, [record.path for record in failing]).returncode == 0
            _wait_for(lambda: len(_rows(options.output)) == 2, what="the quarantine rows")
            blocked.unlink()  # the fault goes away: the listener never stopped
            blocked.mkdir()
            assert _storescu(listener.port, [later.path]).returncode == 0
            _wait_for(lambda: len(_rows(options.output)) == 3, what="the row after the fault")
            metrics = listener.metrics.registry.get_sample_value
            assert metrics("radserve_listen_failures_total") == 4
            assert metrics("radserve_listen_quarantined_total") == 2
    finally:
        os.umask(previous)
    rows = {row["sop_instance_uid"]: row for row in _rows(options.output)}
    assert set(rows) == {record.sop_instance_uid for record in [*failing, later]}
    for record in failing:
        row = rows[record.sop_instance_uid]
        assert (row["status"], row["error_reason"]) == ("error", "internal_error"), row
        assert "FileExistsError" in row["error"] and "quarantine" in row["error"]
    assert rows[later.sop_instance_uid]["status"] == "ok"
    quarantined = sorted(path.stem for path in (options.spool / "quarantine").glob("*.dcm"))
    assert quarantined == sorted(record.sop_instance_uid for record in failing)
    assert not list(options.spool.glob("*.dcm"))
    (report,) = blocked.glob("*.dcm")
    assert oct(report.stat().st_mode & 0o777) == "0o600"


# -- SR forwarding as PACS answer it (PS3.4 Annex B.2.3) --------------------------------------------


@contextlib.contextmanager
def _storage_scp(status: int, sop_class: str = ComprehensiveSRStorage) -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom Storage SCP answering every C-STORE with ``status`` (its port, the UIDs it got).

    PS3.4 B.2.3: 0xB000/0xB006/0xB007 are warnings (the instance is stored, with coercion or
    elements discarded); 0xA7xx is "Refused: Out of Resources". A real PACS answers these at will;
    dcmtk's storescp always answers success, hence this peer.
    """
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    ae = AE(ae_title="PACS")
    ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()


def _report(record: SyntheticRecord, folder: Path) -> Path:
    """A DICOM file of the Comprehensive SR class in the listener's SR folder (what the forwarder sends)."""
    dataset = pydicom.dcmread(record.path)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    folder.mkdir(exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    ("status", "peer_class", "outcome"),
    [
        (0xB000, ComprehensiveSRStorage, "stored"),  # warning: coercion of data elements
        (0xB007, ComprehensiveSRStorage, "stored"),  # warning: data set does not match SOP class
        (0xA700, ComprehensiveSRStorage, "dead-letter"),  # refused: out of resources, every time
        (0x0000, ComputedRadiographyImageStorage, "dead-letter"),  # the PACS takes no Comprehensive SR
        (None, ComprehensiveSRStorage, "dead-letter"),  # destination down
    ],
)
def test_sr_forwarding_follows_the_destination_status(
    dicom_records: list[SyntheticRecord], tmp_path: Path, status: int | None, peer_class: str, outcome: str
) -> None:
    folder = tmp_path / "reports"
    first = _report(dicom_records[0], folder)
    metrics = ListenerMetrics()
    sample = metrics.registry.get_sample_value
    with _storage_scp(status or 0, peer_class) as (port, received):
        if status is None:
            port = free_ports().grpc  # nothing listens there
        forwarder = ReportForwarder(
            folder, Destination("PACS", "127.0.0.1", port), "RADSERVE", metrics,
            limits=AssociationLimits(acse_timeout=5, dimse_timeout=5, network_timeout=5),
            attempts=3, initial_seconds=0, max_seconds=0, audit=AuditLog(tmp_path / "audit.jsonl"),
        )  # fmt: skip
        for _ in range(3):
            forwarder.forward_due()
        audited = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        expected = ["stored"] if outcome == "stored" else ["retry", "retry", "dead_letter"]
        assert [record["outcome"] for record in audited] == expected, audited
        assert {record["destination"] for record in audited} == {f"PACS@127.0.0.1:{port}"}
        if outcome == "stored":
            assert received == [first.stem] and not first.exists()
            assert sample("radserve_listen_reports_sent_total", {"outcome": "ok"}) == 1
            assert sample("radserve_listen_reports_dead_lettered_total") == 0
        else:
            assert (folder / "dead-letter" / first.name).exists() and not first.exists()
            assert sample("radserve_listen_reports_sent_total", {"outcome": "failed"}) == 3
            assert sample("radserve_listen_reports_dead_lettered_total") == 1
            assert sample("radserve_listen_reports_sent_total", {"outcome": "ok"}) == 0
        assert sample("radserve_listen_reports_pending") == 0
    # the forwarder is alive and sends the next SR to a destination that stores it
    with _storage_scp(0x0000) as (port, received):
        forwarder.destination = Destination("PACS", "127.0.0.1", port)
        second = _report(dicom_records[1], folder)
        forwarder.forward_due()
        assert received == [second.stem] and not second.exists()
    assert sample("radserve_listen_report_destination_up") == 1


# -- exposure and limits ----------------------------------------------------------------------------


def test_same_uid_with_other_pixels_gets_a_uid_conflict_row(
    dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    original = _uncompressed(dicom_records)[0]
    forged = pydicom.dcmread(original.path)
    pixels = bytearray(forged.PixelData)
    pixels[: len(pixels) // 2] = bytes(len(pixels) // 2)
    forged.PixelData = bytes(pixels)
    forged_path = tmp_path / "forged.dcm"
    forged.save_as(forged_path, enforce_file_format=True)
    options = _unserved(tmp_path)
    with _in_process(options) as listener:
        for path in (original.path, str(forged_path), original.path, str(forged_path)):
            assert _storescu(listener.port, [path]).returncode == 0
        _wait_for(lambda: len(_rows(options.output)) == 1, what="the conflict row")

        def count(outcome: str) -> float | None:
            return listener.metrics.registry.get_sample_value(
                "radserve_listen_instances_total", {"outcome": outcome}
            )

        assert (count("received"), count("uid_conflict"), count("duplicate")) == (1, 1, 2)
    (row,) = _rows(options.output)
    assert (row["status"], row["error_reason"], row["sop_instance_uid"]) == (
        "error", "uid_conflict", original.sop_instance_uid,
    )  # fmt: skip
    (kept,) = (options.spool / "quarantine").glob("*.conflict")
    assert pydicom.dcmread(kept).PixelData == forged.PixelData
    (waiting,) = options.spool.glob("*.dcm")  # the first one is still the one to classify
    assert pydicom.dcmread(waiting).PixelData == pydicom.dcmread(original.path).PixelData


def test_idle_associations_up_to_the_limit_then_refused(tmp_path: Path) -> None:
    limits = AssociationLimits(max_associations=3)
    with _in_process(_unserved(tmp_path, limits=limits)) as listener:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        idle = [ae.associate("127.0.0.1", listener.port, ae_title="RADSERVE") for _ in range(3)]
        try:
            assert all(association.is_established for association in idle)
            refused = _dcmtk("echoscu", "-v", "-aec", "RADSERVE", "127.0.0.1", str(listener.port))
            assert refused.returncode != 0
            assert "Association Rejected" in refused.stdout + refused.stderr
            idle.pop().release()
            _wait_for(lambda: _echo(listener.port) == 0, 30, "a freed association slot")
        finally:
            for association in idle:
                association.release()
        assert _echo(listener.port, called="SOMEONE-ELSE") != 0  # the called AE title is checked


def test_exposure_needs_dicom_tls_or_insecure(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "radserve", "listen", "--model", TINY_MODEL, "--port", "0",
            "--output", str(tmp_path / "r.jsonl"), "--spool", str(tmp_path / "spool")]  # fmt: skip
    exposed = subprocess.run([*base, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert exposed.returncode != 0 and "without DICOM TLS" in exposed.stderr, exposed.stderr
    certificate, _ = self_signed(tmp_path)
    ca_only = subprocess.run(
        [*base, "--dicom-tls-ca", str(certificate)], capture_output=True, text=True, timeout=60
    )
    assert ca_only.returncode != 0 and "--dicom-tls-ca needs --dicom-tls-cert" in ca_only.stderr, (
        ca_only.stderr
    )


def test_an_instance_the_listener_died_with_is_quarantined_on_restart(
    dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    options = _unserved(tmp_path, max_failures=2)
    with _in_process(options) as listener:
        sent = _storescu(listener.port, [record.path for record in _uncompressed(dicom_records)[:2]])
        assert sent.returncode == 0
    looping, other = sorted(options.spool.glob("*.dcm"))
    # What two SIGKILLs mid-round leave: attempts begun (before classifying) and never ended.
    spool = Spool(options.spool)
    for _ in range(2):
        spool.begin_attempt(looping)
    spool.close()
    with _in_process(options):
        _wait_for(lambda: len(_rows(options.output)) == 1, what="the quarantine row")
    (row,) = _rows(options.output)
    assert (row["sop_instance_uid"], row["error_reason"]) == (looping.stem, "quarantined"), row
    assert "ended 2 times" in row["error"]
    assert (options.spool / "quarantine" / looping.name).exists() and not looping.exists()
    assert other.exists()  # still waiting for the server


def test_audit_trail_names_peers_and_statuses_and_no_patient(
    dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    record = _uncompressed(dicom_records)[0]
    options = _unserved(tmp_path, audit_log=tmp_path / "audit.jsonl")
    with _in_process(options) as listener:
        assert _storescu(listener.port, [record.path]).returncode == 0
        assert _echo(listener.port, called="SOMEONE-ELSE") != 0
        _wait_for(lambda: len((tmp_path / "audit.jsonl").read_text().splitlines()) == 2, 30, "audit lines")
    stored, rejected = (json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines())
    assert (stored["event"], stored["result"], stored["calling_ae"], stored["called_ae"]) == (
        "association", "released", "PACS", "RADSERVE",
    )  # fmt: skip
    assert stored["instances"] == 1 and stored["statuses"] == {"0x0000": 1}
    assert stored["peer"].startswith("127.0.0.1:")
    assert (rejected["result"], rejected["called_ae"]) == ("rejected", "SOMEONE-ELSE")
    text = (tmp_path / "audit.jsonl").read_text()
    source = pydicom.dcmread(record.path)
    secrets = [str(source.PatientName), str(source.PatientID), record.sop_instance_uid]
    assert all(secrets)
    for secret in secrets:
        assert secret not in text
    assert oct((tmp_path / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


def test_overloaded_model_every_acknowledged_instance_ends_ok(
    tiny_export: ExportResult, tmp_path: Path
) -> None:
    """A queue of one sheds most of a burst (``overloaded`` rows from the runner): none ends that way."""
    repository = tmp_path / "repository"
    options = ServingOptions(batching=replace(SETTINGS.batching, max_queue_size=1), warmup=False)
    publish(repository, tiny_export.card.replace(name="shed"), tiny_export.version_dir / "model.onnx",
            options=options)  # fmt: skip
    records = write_synthetic_set(tmp_path / "dicom", 40, seed=34, matrix=(128, 128), compressed_share=0)
    give_up = RetryPolicy(initial_backoff_seconds=0.01, max_backoff_seconds=0.02, give_up_after_seconds=0.05)
    with TritonServer(repository, ports=free_ports(), log_file=tmp_path / "triton.log") as server:
        classify = ClassifyOptions(url=server.grpc_url, workers=1, max_in_flight=32, images_per_request=1,
                                   retry=give_up)  # fmt: skip
        listen = ListenOptions(
            model="shed", output=tmp_path / "r.jsonl", spool=tmp_path / "spool", port=0, classify=classify,
            retry_initial_seconds=0.1, retry_max_seconds=0.5,
        )  # fmt: skip
        with _in_process(listen) as listener:
            assert _storescu(listener.port, [record.path for record in records]).returncode == 0
            _wait_for(lambda: len(_rows(listen.output)) == len(records), 300, "a row per instance")
            shed = listener.metrics.registry.get_sample_value(
                "radserve_listen_retries_total", {"cause": "transient"}
            )
    assert shed, "the queue never overflowed: the test proved nothing"
    rows = _rows(listen.output)
    assert Counter(row["sop_instance_uid"] for row in rows) == Counter(r.sop_instance_uid for r in records)
    assert {row["status"] for row in rows} == {"ok"}
    assert not list(listen.spool.glob("*.dcm"))


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
