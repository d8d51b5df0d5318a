"""The naive baseline's client: ``concurrency`` threads posting wire images to ``naive_server``.

Measured like the served path: the same wire images, the same concurrencies, the same warm-up
before each run, a new connection per request (the server speaks HTTP/1.0, as a hand-written one
would).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from radserve.loadtests.points import REPEATS, Point, Run, interleaved, packed, timed_run, warm_up_seconds
from radserve.model_card import ModelCard, Precision
from radserve.server_config.triton import free_ports


def eager_precision(precision: Precision) -> str:
    """The PyTorch eager precision that stands for a served ``precision`` (no eager int8 on CPU)."""
    return "fp16" if precision == "fp16" else "fp32"


@contextmanager
def naive_server(card: ModelCard, precision: str) -> Iterator[int]:
    """``naive_server`` for ``card``'s architecture in a subprocess, running; yields its port."""
    port = free_ports().http  # one free loopback port
    height, width = card.input_size
    command = [
        sys.executable, "-m", "radserve.loadtests.naive_server", "--architecture", card.architecture,
        "--classes", str(card.num_classes), "--size", str(height), str(width), "--port", str(port),
        "--precision", precision,
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the naive baseline server did not start: {' '.join(command)}")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _post(port: int, image: np.ndarray) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        headers = {"X-Shape": ",".join(map(str, image.shape)), "Content-Type": "application/octet-stream"}
        connection.request("POST", "/predict", body=image.tobytes(), headers=headers)
        reply = connection.getresponse()
        if reply.status != 200:
            raise RuntimeError(f"naive server answered {reply.status}")
        json.loads(reply.read())
    finally:
        connection.close()


def _load(port: int, images: Sequence[np.ndarray], concurrency: int, seconds: float) -> list[float]:
    """``concurrency`` threads posting for ``seconds`` (each at least once); all latencies."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def user(offset: int) -> None:
        index = offset
        try:
            while True:
                sent = time.perf_counter()
                _post(port, images[index % len(images)])
                latencies.append(time.perf_counter() - sent)
                index += concurrency
                if time.perf_counter() >= deadline:
                    return
        except BaseException as error:  # re-raised in the measuring thread
            errors.append(error)

    threads = [threading.Thread(target=user, args=(offset,)) for offset in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return latencies


def measure_naive(
    card: ModelCard,
    images: Sequence[np.ndarray],
    configs: Sequence[tuple[int, int]],
    seconds: float,
    repeats: int = REPEATS,
) -> tuple[list[Point], str]:
    """Points per (requests in flight, radiographs per request), the same as the served path's, and
    the PyTorch eager precision that ran (see ``eager_precision``)."""
    precision = eager_precision(card.precision)

    def measure(config: tuple[int, int]) -> Run:
        concurrency, per_request = config
        requests = packed(images, per_request)
        _load(port, requests, concurrency, warm_up_seconds(seconds))
        started = time.perf_counter()
        latencies = _load(port, requests, concurrency, seconds)
        return timed_run(latencies, len(latencies) * per_request, time.perf_counter() - started)

    with naive_server(card, precision) as port:
        runs = interleaved(list(configs), measure, repeats)
    points = [Point("naive", c, k, point_runs) for (c, k), point_runs in zip(configs, runs, strict=True)]
    return points, precision
