"""tritonserver replicas behind the real nginx (``server_config/nginx/``): one killed mid-run, both
restarted in turn during a run, TLS to the replicas, admin RPCs refused at the proxy."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.results import ResultRow
from radserve.errors import ConfigurationError
from radserve.export.pipeline import ExportResult
from radserve.server_config.load_balancer import NginxConfig, render_nginx_config
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_metrics import model_counters
from radserve.server_config.triton_security import ServerTls
from radserve.synthetic.dataset import SyntheticRecord, write_synthetic_set
from radserve.transport import GRPC_ADMIN_KEY_HEADER
from tests._certificates import CertificateAuthority, self_signed

TINY_MODEL = "tiny"  # exported by conftest's tiny_export
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make test installs it as root)"
)


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def _checked_config(config: NginxConfig, folder: Path) -> Path:
    """The rendered configuration, accepted by ``nginx -t`` (syntax, certificates, modules)."""
    config.prefix.mkdir(parents=True, exist_ok=True)
    path = folder / "nginx.conf"
    path.write_text(render_nginx_config(config))
    checked = subprocess.run([NGINX, "-t", "-p", str(config.prefix), "-c", str(path)], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()
    return path


def _nginx(config: NginxConfig, folder: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground with its own prefix (never the system service)."""
    path = _checked_config(config, folder)
    return subprocess.Popen([NGINX, "-p", str(config.prefix), "-c", str(path), "-g", "daemon off;"])


@pytest.fixture
def replicas(repository: Path, tiny_export: ExportResult, tmp_path: Path) -> Iterator[list[TritonServer]]:
    logs = (tmp_path / "replica0.log", tmp_path / "replica1.log")
    servers = [TritonServer(repository, ports=free_ports(), log_file=log) for log in logs]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_two_replicas_behind_nginx_survive_one_killed(replicas: list[TritonServer], tmp_path: Path) -> None:
    records = write_synthetic_set(tmp_path / "dicom", 200, seed=5, matrix=(256, 256), compressed_share=0)
    port = free_ports().grpc
    config = NginxConfig([server.grpc_url for server in replicas], f"127.0.0.1:{port}", tmp_path / "nginx")
    balancer = _nginx(config, tmp_path)
    rows: list[ResultRow] = []
    killed = threading.Event()
    served_by_killed: list[float] = []

    def on_rows(batch: list[ResultRow]) -> None:
        rows.extend(batch)
        if len(rows) >= 60 and not killed.is_set():
            killed.set()
            served_by_killed.append(model_counters(replicas[1].metrics_url, TINY_MODEL).inferences)
            replicas[1].kill()

    try:
        _wait_port(port)
        paths = [Path(record.path) for record in records]
        options = ClassifyOptions(url=f"127.0.0.1:{port}", max_in_flight=8, workers=2)
        summary = asyncio.run(classify(paths, TINY_MODEL, on_rows, options))
    finally:
        balancer.terminate()
        balancer.wait(10)
    assert killed.is_set()
    assert summary.radiographs == len(records) and summary.errors == 0
    assert sorted(row.sop_instance_uid for row in rows) == sorted(r.sop_instance_uid for r in records)
    assert {row.status for row in rows} == {"ok"}
    # Both replicas served: the killed one before it died, the survivor the rest.
    assert served_by_killed[0] > 0
    survivor = model_counters(replicas[0].metrics_url, TINY_MODEL).inferences
    assert survivor >= len(records) - served_by_killed[0]


def test_tls_termination_config_is_accepted_by_nginx(tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    config = NginxConfig(
        ["127.0.0.1:1", "127.0.0.1:2"], f"127.0.0.1:{free_ports().grpc}", tmp_path / "prefix",
        tls_certificate=certificate, tls_key=key,
    )  # fmt: skip
    assert "ssl http2" in _checked_config(config, tmp_path).read_text()


def _workers(master: int) -> set[int]:
    """nginx's worker processes (the master's children)."""
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def _reload(balancer: subprocess.Popen[bytes], config: NginxConfig, folder: Path) -> None:
    """Serve ``config``: new workers take it, the old ones finish their requests; return once the
    old ones are gone (no request reaches a replica left out after this)."""
    _checked_config(config, folder)
    old = _workers(balancer.pid)
    balancer.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while (old & _workers(balancer.pid) or not _workers(balancer.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old & _workers(balancer.pid), "nginx's old workers did not finish"


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def test_rolling_restart_of_both_replicas_behind_nginx_loses_no_row(
    replicas: list[TritonServer], tmp_path: Path
) -> None:
    """Each replica in turn as Kubernetes terminates a pod in a rolling update (kubernetes.io/docs/
    concepts/workloads/pods/pod-lifecycle/#pod-termination): the endpoints drop it (here: nginx
    reloaded without it) while the preStop hook keeps it serving, then SIGTERM; the new pod joins
    the endpoints once ready (here: restarted on the same ports, nginx reloaded with it)."""
    records = write_synthetic_set(tmp_path / "dicom", 300, seed=11, matrix=(256, 256), compressed_share=0)
    port = free_ports().grpc
    prefix = tmp_path / "nginx"
    everyone = NginxConfig([server.grpc_url for server in replicas], f"127.0.0.1:{port}", prefix)
    balancer = _nginx(everyone, tmp_path)
    sent: dict[str, float] = {}
    latency: dict[str, tuple[float, str]] = {}  # path: (seconds from file to row, phase)
    phase = ["warm-up"]  # the first rows start the decoders and connections: left out
    started, finished = threading.Event(), threading.Event()
    restarted: list[TritonServer] = []

    def roll() -> None:
        phase[0] = "during"
        for index, server in enumerate(list(replicas)):
            others = [other.grpc_url for other in replicas if other is not server]
            _reload(balancer, NginxConfig(others, everyone.listen, prefix), tmp_path)
            server.stop()  # SIGTERM: Triton finishes what it holds and exits
            fresh = TritonServer(server.repository, ports=server.ports, log_file=tmp_path / f"new{index}.log")
            replicas[index] = fresh.start()
            restarted.append(fresh)
            _reload(balancer, everyone, tmp_path)
        phase[0] = "after"
        finished.set()

    def files() -> Iterator[Path]:
        # A paced source (files arriving) until the rolling restart is over, so that it happens
        # during the run; the last files wait for its end.
        for number, record in enumerate(records):
            if number >= len(records) - 20:
                finished.wait(300)
            elif not finished.is_set():
                time.sleep(0.03)
            sent[record.path] = time.monotonic()
            yield Path(record.path)

    def on_rows(batch: list[ResultRow]) -> None:
        rows.extend(batch)
        for row in batch:
            latency[row.path] = (time.monotonic() - sent[row.path], phase[0])
        if len(rows) >= 20 and phase[0] == "warm-up":
            phase[0] = "before"
        if len(rows) >= 60 and not started.is_set():
            started.set()
            threading.Thread(target=roll, daemon=True).start()

    rows: list[ResultRow] = []
    try:
        _wait_port(port)
        options = ClassifyOptions(url=f"127.0.0.1:{port}", max_in_flight=8, workers=2)
        summary = asyncio.run(classify(files(), TINY_MODEL, on_rows, options))
    finally:
        balancer.terminate()
        balancer.wait(10)
    assert finished.is_set() and len(restarted) == 2
    failed = [row for row in rows if row.status != "ok"]
    assert summary.radiographs == len(records) == len(rows) and summary.errors == 0 and not failed, failed[:3]
    assert sorted(row.sop_instance_uid for row in rows) == sorted(r.sop_instance_uid for r in records)
    by_phase = {name: [s for s, p in latency.values() if p == name] for name in ("before", "during")}
    assert all(by_phase.values()), {name: len(values) for name, values in by_phase.items()}
    assert model_counters(restarted[0].metrics_url, TINY_MODEL).inferences > 0  # traffic came back
    figures = {
        "rows": len(rows),
        "failed": len(failed),
        "rows_during_restart": len(by_phase["during"]),
        **{f"p50_ms_{name}": round(1000 * float(np.median(values)), 1) for name, values in by_phase.items()},
        **{f"p99_ms_{name}": round(1000 * _p99(values), 1) for name, values in by_phase.items()},
    }
    print("rolling restart:", json.dumps(figures))


def test_a_replica_sigtermed_without_drain_is_retried_on_the_other(
    replicas: list[TritonServer], tmp_path: Path
) -> None:
    """No drain at all (client-side balancing, SIGTERM at once): from SIGTERM to its exit Triton
    answers "... is not at ready state" (UNAVAILABLE); the client sends those to the other replica."""
    records = write_synthetic_set(tmp_path / "dicom", 80, seed=13, matrix=(256, 256), compressed_share=0)
    rows: list[ResultRow] = []
    stopped = threading.Event()

    def on_rows(batch: list[ResultRow]) -> None:
        rows.extend(batch)
        if len(rows) >= 20 and not stopped.is_set():
            stopped.set()
            threading.Thread(target=replicas[1].stop, daemon=True).start()

    options = ClassifyOptions(url=[server.grpc_url for server in replicas], max_in_flight=8, workers=2)
    paths = [Path(record.path) for record in records]
    summary = asyncio.run(classify(paths, TINY_MODEL, on_rows, options))
    assert stopped.is_set()
    assert summary.radiographs == len(records) and summary.errors == 0
    assert {row.status for row in rows} == {"ok"}


def test_tls_to_the_replicas_and_admin_rpcs_stop_at_nginx(
    repository: Path, tiny_export: ExportResult, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    authority = CertificateAuthority(tmp_path)
    issued, client = authority.issue("replica", server=True), authority.issue("nginx", server=False)
    key = "k3y-behind-nginx"
    tls = ServerTls(issued.cert, issued.key, client_ca=authority.cert)  # mutual TLS: nginx presents its own
    with TritonServer(repository, ports=free_ports(), tls=tls, admin_key=key) as replica:
        port = free_ports().grpc
        config = NginxConfig(
            [replica.grpc_url], f"127.0.0.1:{port}", tmp_path / "nginx", upstream_ca=authority.cert,
            upstream_certificate=client.cert, upstream_key=client.key,
        )  # fmt: skip
        balancer = _nginx(config, tmp_path)
        try:
            _wait_port(port)
            rows: list[ResultRow] = []
            options = ClassifyOptions(url=f"127.0.0.1:{port}", admin_key=key, workers=1)
            summary = asyncio.run(
                classify([Path(r.path) for r in dicom_records], TINY_MODEL, rows.extend, options)
            )
            through = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            headers = {GRPC_ADMIN_KEY_HEADER: key}
            with pytest.raises(InferenceServerException) as refused:
                through.unload_model(TINY_MODEL, headers=headers)
            assert through.is_model_ready(TINY_MODEL)  # still served
        finally:
            balancer.terminate()
            balancer.wait(10)
    assert summary.errors == 0 and rows and {row.status for row in rows} == {"ok"}
    assert "PERMISSION_DENIED" in str(refused.value.status())


def test_nginx_listens_beyond_loopback_only_with_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="without TLS"):
        render_nginx_config(NginxConfig(["127.0.0.1:1"], "0.0.0.0:8001", tmp_path))
    assert "listen 0.0.0.0:8001 http2;" in render_nginx_config(
        NginxConfig(["127.0.0.1:1"], "0.0.0.0:8001", tmp_path, insecure=True)
    )
    certificate, key = self_signed(tmp_path)
    secured = NginxConfig(["127.0.0.1:1"], "0.0.0.0:8001", tmp_path, tls_certificate=certificate, tls_key=key)
    assert "listen 0.0.0.0:8001 ssl http2;" in render_nginx_config(secured)
    allowed = render_nginx_config(NginxConfig(["127.0.0.1:1"], "127.0.0.1:8001", tmp_path, admin_rpcs=True))
    assert "return 403" not in allowed and "return 403" in render_nginx_config(NginxConfig(["127.0.0.1:1"]))
