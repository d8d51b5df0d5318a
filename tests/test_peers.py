"""``radserve bench --peers``: the pieces that run without the peers' own environments.

The peers themselves (MLServer, KServe, Ray Serve, LitServe, BentoML) are installed and run by
``make bench-peers`` only (each in its own venv, in a loopback-only network namespace).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from radserve.errors import ConfigurationError
from radserve.loadtests.peer_report import PeersResult, peers_table
from radserve.loadtests.peers import (
    PEERS,
    Target,
    _answer_rows,
    _http_run,
    _request_body,
    chosen,
    require_loopback_only,
)
from radserve.loadtests.points import Point, Run

IMAGES = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)


def test_peers_are_chosen_by_name_and_unknown_names_refused() -> None:
    assert [peer.name for peer in chosen([])] == list(PEERS)
    assert [peer.name for peer in chosen(["kserve"])] == ["kserve"]
    with pytest.raises(ConfigurationError, match="unknown peer"):
        chosen(["torchserve"])


def test_refuses_outside_a_loopback_only_namespace() -> None:
    import socket

    if [name for _, name in socket.if_nameindex()] == ["lo"]:
        pytest.skip("this test runs in a loopback-only namespace already")
    with pytest.raises(ConfigurationError, match="unshare --net"):
        require_loopback_only()


@pytest.mark.skipif(
    shutil.which("unshare") is None or not hasattr(__import__("os"), "geteuid"), reason="no unshare"
)
def test_accepts_a_loopback_only_namespace() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("unshare --net needs root")
    code = "from radserve.loadtests.peers import require_loopback_only; require_loopback_only(); print('ok')"
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"ip link set lo up; {sys.executable} -c \"{code}\""],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("protocol", ["binary-http", "base64-json", "base64-list-json"])
def test_http_payloads_round_trip(protocol: str) -> None:
    import base64
    import json

    body, _ = _request_body(protocol, IMAGES)
    probabilities = np.full((3, 4), 0.25, np.float32)
    if protocol == "binary-http":
        answer, shape = probabilities.tobytes(), "3,4"
    elif protocol == "base64-json":
        answer, shape = (
            json.dumps(
                {"probabilities": base64.b64encode(probabilities.tobytes()).decode(), "shape": [3, 4]}
            ).encode(),
            None,
        )
        assert np.array_equal(
            np.frombuffer(base64.b64decode(json.loads(body)["image"]), np.uint8), IMAGES.ravel()
        )
    else:
        answer, shape = (
            json.dumps([base64.b64encode(row.tobytes()).decode() for row in probabilities]).encode(),
            None,
        )
        assert len(json.loads(body)["images"]) == 3
    assert _answer_rows(protocol, answer, shape) == 3
    with pytest.raises(ValueError, match="sum to 1"):
        _answer_rows("binary-http", np.zeros((3, 4), np.float32).tobytes(), "3,4")


def _server(fail_every: int) -> tuple[ThreadingHTTPServer, list[int]]:
    """A binary-http peer answering uniform probabilities; every ``fail_every``-th request gets a 500."""
    seen = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen[0] += 1
            rows = int(self.headers["X-Shape"].split(",")[0])
            body = np.full((rows, 2), 0.5, np.float32).tobytes()
            self.send_response(500 if fail_every and seen[0] % fail_every == 0 else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Shape", f"{rows},2")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("fail_every", [0, 3])
def test_every_http_request_is_accounted_for(fail_every: int) -> None:
    server, seen = _server(fail_every)
    try:
        target = Target("fake", "binary-http", f"127.0.0.1:{server.server_address[1]}", pid=0)
        run, failed = _http_run(target, [IMAGES[:2]], concurrency=2, seconds=0.3)
    finally:
        server.shutdown()
    answered = run.images // 2  # requests answered 200 with the right rows (2 radiographs each)
    assert answered > 0 and seen[0] == answered + failed  # every request sent is ok or failed
    assert failed == (seen[0] // 3 if fail_every else 0)


def _point(name: str, rate: float, concurrency: int, batch: int) -> Point:
    runs = [Run(int(rate), 1.0, 1.0, 2.0, 3.0, extra={"failed_requests": 0})]
    return Point(name, concurrency, batch, runs, extra={"failed_requests": 1 if name == "bentoml" else 0})


def test_table_ranks_each_server_at_its_best_with_ratios() -> None:
    result = PeersResult(
        model="m", architecture="mobilenet_v3_small", precision="fp32", input_size=(224, 224), cpu_count=2,
        layout=(2, 1), onnxruntime="1.32.0",
        raw=[Point("raw", 2, 8, [Run(500, 1.0)], layout="2x1")],
        servers={
            "radserve": [_point("radserve", 400, 4, 1), _point("radserve", 300, 4, 8)],
            "bentoml": [_point("bentoml", 100, 4, 1), _point("bentoml", 200, 4, 8)],
        },
        peers={"bentoml": {"batching": "adaptive batching"}},
    )  # fmt: skip
    data = result.to_dict()
    assert data["ratios"]["radserve_over_peer_best"] == {"bentoml": 2.0}
    assert data["ratios"]["best_over_engine_limit"] == {"radserve": 0.8, "bentoml": 0.4}
    assert data["failed_requests"] == {"radserve": 0, "bentoml": 2}  # both of its points
    table = peers_table(data)
    assert "| radserve | Triton dynamic batcher | 400.0 (400.0-400.0) | 4 |" in table
    assert "| bentoml | adaptive batching | 200.0 (200.0-200.0) | 4x8 |" in table and "| 2.0 | 2 |" in table
    assert "engine limit 500.0 img/s" in table


def test_peer_servers_exist_for_every_peer() -> None:
    folder = Path(__file__).resolve().parent.parent / "loadtests" / "peer_servers"
    assert all((folder / peer.script).is_file() for peer in PEERS.values())
