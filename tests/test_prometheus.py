"""Prometheus for real: promtool validates the configs and rules, and a real Prometheus scrapes a real
tritonserver and a classifying client and evaluates ``radserve:radiographs_per_second``."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.inputs import discover
from radserve.client.run_metrics import ClientMetrics
from radserve.server_config.triton import TritonServer

TINY_MODEL = "tiny"
ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "server_config" / "prometheus"
DASHBOARD = ROOT / "server_config" / "grafana" / "radserve.json"

_MISSING = "not installed (`make prometheus` installs Debian's prometheus package, as root)"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason=f"promtool {_MISSING}")
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None, reason=f"prometheus {_MISSING}")


def _render(folder: Path, triton_metrics: str, client_metrics: str, interval: str = "1s") -> Path:
    """prometheus.yml and rules.yml in ``folder`` with this run's targets and intervals."""
    text = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    for default, actual in (("127.0.0.1:8002", triton_metrics), ("127.0.0.1:9108", client_metrics)):
        assert default in text
        text = text.replace(default, actual)
    text = text.replace("scrape_interval: 15s", f"scrape_interval: {interval}")
    text = text.replace("evaluation_interval: 15s", f"evaluation_interval: {interval}")
    config = folder / "prometheus.yml"
    config.write_text(text)
    shutil.copy(PROMETHEUS_DIR / "rules.yml", folder / "rules.yml")
    return config


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_config_rules_and_rule_unit_tests() -> None:
    for done in (
        _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml")),
        _promtool("check", "rules", str(PROMETHEUS_DIR / "rules.yml")),
        _promtool("test", "rules", str(PROMETHEUS_DIR / "rules_test.yml")),
    ):
        assert done.returncode == 0, done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


@pytest.fixture
def client_metrics() -> Iterator[tuple[ClientMetrics, int]]:
    metrics = ClientMetrics()
    port = metrics.serve(0)
    yield metrics, port
    metrics.stop_serving()


@needs_prometheus
def test_prometheus_records_radiographs_per_second(
    triton: TritonServer, dicom_folder: Path, client_metrics: tuple[ClientMetrics, int], tmp_path: Path
) -> None:
    metrics, client_port = client_metrics
    triton_target = triton.metrics_url.removeprefix("http://").removesuffix("/metrics")
    config = _render(tmp_path, triton_target, f"127.0.0.1:{client_port}")
    assert _promtool("check", "config", str(config)).returncode == 0
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stop = threading.Event()
    files = discover([dicom_folder]).files
    options = ClassifyOptions(url=triton.grpc_url, max_in_flight=4, workers=1, metrics=metrics)

    def classify_repeatedly() -> None:
        while not stop.is_set():
            asyncio.run(classify(files, TINY_MODEL, lambda rows: None, options))

    runner = threading.Thread(target=classify_repeatedly, daemon=True)
    runner.start()
    try:
        client_rate = server_rate = 0.0
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not (client_rate > 0 and server_rate > 0):
            time.sleep(1)
            try:
                client = _query(base, f'radserve:radiographs_per_second{{model="{TINY_MODEL}"}}')
                server = _query(base, f'radserve:server_radiographs_per_second{{model="{TINY_MODEL}"}}')
            except OSError:
                continue  # not listening yet
            if client["data"]["result"]:
                client_rate = float(client["data"]["result"][0]["value"][1])
            if server["data"]["result"]:
                server_rate = float(server["data"]["result"][0]["value"][1])
        assert client_rate > 0, log.name
        assert server_rate > 0
        targets = _query(base, "up")["data"]["result"]
        assert {t["metric"]["job"]: t["value"][1] for t in targets} == {"triton": "1", "radserve-client": "1"}
        # Every dashboard query is valid PromQL for this Prometheus, and the rate panels have data.
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                reply = _query(base, expr)
                assert reply["status"] == "success", (panel["title"], expr)
    finally:
        stop.set()
        runner.join(timeout=60)
        prometheus.terminate()
        prometheus.wait(timeout=30)
        log.close()
