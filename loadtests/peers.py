"""``radserve bench --peers``: radserve against the servers a platform team would pick instead.

Every server runs the same ``model.onnx`` on the same ONNX Runtime version, with the same engine
layout (``sessions x threads``, radserve's embedded layout on this host), and gets the same wire
tensors at the same (requests in flight x radiographs per request) grid:

- **radserve**: tritonserver with the embedded target, radserve's gRPC load (``bench._served``);
- **mlserver**: MLServer with a custom ONNX Runtime runtime, adaptive batching, KServe v2 gRPC: the
  same load generator, unchanged;
- **kserve**: KServe's Python model server, v2 gRPC (it has no batcher of its own);
- **ray-serve**: Ray Serve with ``@serve.batch``, HTTP with binary bodies;
- **litserve**: LitServe with ``max_batch_size``, HTTP with base64 JSON (its only request formats);
- **bentoml**: BentoML with adaptive batching, HTTP with base64 JSON (binary pickle is refused by
  its public server).

Each peer runs in its own virtual environment (``build/peers/NAME``, made on first use with pinned
versions, so their dependencies never meet radserve's) from the standalone scripts in
``loadtests/peer_servers/``. Servers are measured one at a time, round by round (``--repeats``
rounds; in each round every server is started, warmed and run once at every point), so drift on
the machine falls on all of them alike. Every request's answer is checked (status, shape); a run
counts its failed requests and the table shows them. The whole comparison runs in a network
namespace with only a loopback interface (``unshare --net``: ``make bench-peers``), so no server,
Ray's cluster processes included, can listen or send beyond this machine.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from radserve.errors import ConfigurationError, ServerError
from radserve.loadtests import cpu_profile
from radserve.loadtests.points import Point, Run, config_label, packed, timed_run, warm_up_seconds

LOGGER = logging.getLogger(__name__)
SERVERS_FOLDER = Path(__file__).resolve().parent / "peer_servers"
READY_TIMEOUT_SECONDS = 180.0


@dataclass(frozen=True)
class Peer:
    """A serving system compared with radserve: how to install it, start it and talk to it."""

    name: str
    requirements: tuple[str, ...]  # pinned, installed into its own venv with radserve's onnxruntime
    script: str  # in loadtests/peer_servers/
    protocol: str  # v2-grpc | binary-http | base64-json | base64-list-json
    batching: str  # what its batching does, as configured


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("mlserver", ("mlserver==1.7.1",), "mlserver_peer.py", "v2-grpc", "adaptive batching"),
        Peer("kserve", ("kserve==0.21.0",), "kserve_peer.py", "v2-grpc", "none (no batcher in its server)"),
        Peer("ray-serve", ("ray[serve]==2.60.0",), "ray_peer.py", "binary-http", "@serve.batch"),
        Peer("litserve", ("litserve==0.2.19",), "litserve_peer.py", "base64-json", "max_batch_size"),
        Peer("bentoml", ("bentoml==1.4.40",), "bentoml_peer.py", "base64-list-json", "adaptive batching"),
    )
}


def chosen(names: Sequence[str]) -> list[Peer]:
    """The peers named (all of them for none), or a :class:`ConfigurationError` naming the unknown."""
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise ConfigurationError(
            f"unknown peer(s) {', '.join(unknown)}: radserve bench compares {', '.join(PEERS)}"
        )
    return [PEERS[name] for name in names or PEERS]


def require_loopback_only() -> None:
    """Refuse to run unless this process sees no network interface but loopback (``unshare --net``)."""
    import socket

    interfaces = sorted(name for _, name in socket.if_nameindex())  # this network namespace's, not /sys's
    if interfaces != ["lo"]:
        raise ConfigurationError(
            f"radserve bench --peers starts servers that bind every interface ({', '.join(interfaces)} "
            "here): run it in a loopback-only network namespace, e.g. `make bench-peers` "
            "(unshare --net sh -c 'ip link set lo up && radserve bench --peers ...')"
        )


def peer_python(peer: Peer, environments: Path) -> Path:
    """The Python of ``peer``'s own venv under ``environments``, created (pinned) if missing."""
    folder = environments.resolve() / peer.name
    python = folder / "bin" / "python"
    stamp = folder / ".radserve-peer"
    wanted = json.dumps([*peer.requirements, f"onnxruntime=={metadata.version('onnxruntime')}"])
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    LOGGER.info("installing %s into %s", peer.name, folder)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    install = [str(python), "-m", "pip", "install", "--quiet", *json.loads(wanted)]
    if subprocess.run(install, check=False).returncode != 0:
        raise ServerError(f"cannot install {peer.name} into {folder}: {' '.join(install[3:])}")
    stamp.write_text(wanted)
    return python


@dataclass(frozen=True)
class Target:
    """A running server: where to send, how, and its process (for the CPU profile)."""

    name: str
    protocol: str
    address: str  # host:port
    pid: int
    model: str = "peer"


def _request_body(protocol: str, images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    if protocol == "binary-http":
        return images.tobytes(), {"X-Shape": ",".join(map(str, images.shape))}
    if protocol == "base64-json":
        body = {"image": base64.b64encode(images.tobytes()).decode(), "shape": list(images.shape)}
    else:  # base64-list-json: one string per radiograph
        body = {"images": [base64.b64encode(image.tobytes()).decode() for image in images]}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def _answer_rows(protocol: str, payload: bytes, shape: str | None) -> int:
    """How many probability rows an HTTP peer's answer holds (each row checked to sum to 1)."""
    if protocol == "binary-http":
        rows, classes = (int(size) for size in (shape or "0,0").split(","))
        probabilities = np.frombuffer(payload, np.float32).reshape(rows, classes)
    elif protocol == "base64-json":
        answer = json.loads(payload)
        probabilities = np.frombuffer(base64.b64decode(answer["probabilities"]), np.float32)
        probabilities = probabilities.reshape(answer["shape"])
    else:
        probabilities = np.stack(
            [np.frombuffer(base64.b64decode(row), np.float32) for row in json.loads(payload)]
        )
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("an answer's probabilities do not sum to 1")
    return len(probabilities)


def _http_run(
    target: Target, requests: list[np.ndarray], concurrency: int, seconds: float
) -> tuple[Run, int]:
    """``concurrency`` threads, each on its own keep-alive connection, for ``seconds`` (each at least one
    request); the run and the number of failed requests (a wrong status, shape or row count, or a
    broken connection)."""
    host, port = target.address.rsplit(":", 1)
    bodies = [_request_body(target.protocol, images) for images in requests]
    latencies: list[float] = []
    done, failed = [0], [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def user(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        index = offset
        while True:  # every user sends at least once (a readiness probe runs for 0 s)
            body, headers = bodies[index % len(bodies)]
            expected = len(requests[index % len(requests)])
            sent = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers=headers)
                reply = connection.getresponse()
                payload = reply.read()
                ok = (
                    reply.status == 200
                    and _answer_rows(target.protocol, payload, reply.getheader("x-shape")) == expected
                )
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=120)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - sent)
                    done[0] += expected
                else:
                    failed[0] += 1
            index += concurrency
            if time.perf_counter() >= deadline:
                break
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=user, args=(offset,)) for offset in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timed_run(latencies, done[0], time.perf_counter() - started), failed[0]


def measure_target(
    target: Target, images: Sequence[np.ndarray], config: tuple[int, int], seconds: float
) -> Run:
    """One warmed-up run of ``target`` at (requests in flight, radiographs per request), with its CPU
    cost per radiograph and its failed requests in ``extra``."""
    from radserve.loadtests.bench import _served

    concurrency, per_request = config
    if target.protocol == "v2-grpc":  # _served warms up, then samples the CPU around its window
        try:
            run = asyncio.run(
                _served(target.address, target.model, images, concurrency, seconds, target.pid, per_request)
            )
            run.extra["failed_requests"] = 0
        except Exception as error:  # a failed call ends the run: counted, never dropped silently
            LOGGER.error("%s %s: %s", target.name, config_label(*config), error)
            run = Run(0, seconds, extra={"failed_requests": 1})
    else:
        requests = packed(images, per_request)
        _http_run(target, requests, concurrency, warm_up_seconds(seconds))
        before = cpu_profile.sample(target.pid)
        run, failed = _http_run(target, requests, concurrency, seconds)
        after = cpu_profile.sample(target.pid)
        run.extra["failed_requests"] = failed
        if run.images:
            run.extra["cpu_ms_per_image"] = cpu_profile.per_image(before, after, run.images)
    LOGGER.info(
        "%s %s: %.1f img/s, %d failed",
        target.name,
        config_label(*config),
        run.images_per_second,
        run.extra["failed_requests"],
    )
    return run


def _wait_ready(target: Target, process: subprocess.Popen[bytes], probe: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{target.name} exited with code {process.returncode} before it was ready")
        try:
            if probe():
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise ServerError(f"{target.name} was not ready within {READY_TIMEOUT_SECONDS:.0f} s")


def _probe(target: Target, image: np.ndarray) -> Callable[[], bool]:
    if target.protocol == "v2-grpc":
        import tritonclient.grpc as grpcclient

        def ready() -> bool:
            client = grpcclient.InferenceServerClient(target.address)
            try:
                return bool(client.is_model_ready(target.model))
            finally:
                client.close()

        return ready

    def answers() -> bool:
        run, failed = _http_run(target, [image], 1, 0.0)
        return failed == 0 and run.images > 0

    return answers


@contextmanager
def peer_server(
    peer: Peer,
    python: Path,
    onnx_path: Path,
    layout: tuple[int, int],
    shape: Sequence[int],
    image: np.ndarray,
) -> Iterator[Target]:
    """``peer`` serving ``onnx_path`` on a free loopback port; stopped (its process group) on exit."""
    from radserve.server_config.triton import free_ports

    port = free_ports().grpc
    sessions, threads = layout
    model_file = str(onnx_path.resolve())  # the peer runs in its own folder
    command = [str(python), str(SERVERS_FOLDER / peer.script), "--onnx", model_file, "--port", str(port)]
    command += ["--sessions", str(sessions), "--threads", str(threads), "--shape", *map(str, shape)]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"radserve-peer-{peer.name}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=SERVERS_FOLDER, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    target = Target(peer.name, peer.protocol, f"127.0.0.1:{port}", process.pid)
    try:
        _wait_ready(target, process, _probe(target, image))
        yield target
    finally:
        with_group = os.getpgid(process.pid) if process.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, 9)
                process.wait()
        log.close()


def compare(
    onnx_path: Path,
    repository: Path,
    model: str,
    images: Sequence[np.ndarray],
    configs: Sequence[tuple[int, int]],
    seconds: float,
    repeats: int,
    peers: Sequence[Peer],
    environments: Path,
    layout: tuple[int, int],
) -> list[Point]:
    """radserve and every peer at every config, ``repeats`` rounds; one Point per server and config."""
    from radserve.server_config.triton import TritonServer, free_ports

    require_loopback_only()
    pythons = {peer.name: peer_python(peer, environments) for peer in peers}
    shape = list(images[0].shape[1:])
    runs: dict[tuple[str, tuple[int, int]], list[Run]] = {}
    for round_index in range(repeats):
        LOGGER.info("round %d of %d", round_index + 1, repeats)
        with TritonServer(repository, ports=free_ports()) as server:
            target = Target("radserve", "v2-grpc", server.grpc_url, server.pid or 0, model)
            for config in configs:
                runs.setdefault(("radserve", config), []).append(
                    measure_target(target, images, config, seconds)
                )
        for peer in peers:
            with peer_server(peer, pythons[peer.name], onnx_path, layout, shape, images[0]) as target:
                for config in configs:
                    runs.setdefault((peer.name, config), []).append(
                        measure_target(target, images, config, seconds)
                    )
    return [
        Point(name, concurrency, per_request, point_runs, extra=_extra(point_runs))
        for (name, (concurrency, per_request)), point_runs in runs.items()
    ]


def _extra(runs: list[Run]) -> dict[str, Any]:
    failed = sum(run.extra.get("failed_requests", 0) for run in runs)
    costs = [run.extra["cpu_ms_per_image"] for run in runs if run.extra.get("cpu_ms_per_image")]
    return {"failed_requests": failed, "cpu_ms_per_image": costs[len(costs) // 2] if costs else {}}


def main(argv: Sequence[str] | None = None) -> int:
    """Install the peers' venvs (needs the package index: run before entering the namespace)."""
    import argparse

    parser = argparse.ArgumentParser(description="install the peer servers of radserve bench --peers")
    parser.add_argument("--environments", type=Path, default=Path("build/peers"))
    parser.add_argument("peers", nargs="*", help=f"some of {', '.join(PEERS)} (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for peer in chosen(args.peers):
        print(f"{peer.name}: {peer_python(peer, args.environments)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
