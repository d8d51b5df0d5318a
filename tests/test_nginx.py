"""Two tritonserver replicas behind the real nginx (``server_config/nginx/``), one killed mid-run."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.results import ResultRow
from radserve.export.pipeline import ExportResult
from radserve.server_config.load_balancer import NginxConfig, render_nginx_config
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_metrics import model_counters
from radserve.synthetic.dataset import write_synthetic_set
from tests._certificates import self_signed

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
