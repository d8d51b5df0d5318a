"""``radserve bench``: raw engine, served path, naive baseline and end-to-end path, side by side.

One run on one machine and one model, so the ratios compare like with like:

- **raw**: ONNX Runtime in this process on the exported graph at several batch sizes (the limit);
- **served**: Triton over gRPC (asyncio client, one channel) at concurrencies 1, 2, 4, 8, 16;
- **naive**: one request at a time to ``loadtests/naive_server.py`` (http.server + PyTorch eager);
- **end-to-end**: ``radserve classify``'s runner over a DICOM folder (decode + display + resize + serve).

Prints a table, writes ``bench.json`` and ``bench.png`` (throughput and p95 vs concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radserve.model_card import INPUT_NAME, OUTPUT_NAME, ModelCard

LOGGER = logging.getLogger(__name__)

CONCURRENCIES = (1, 2, 4, 8, 16)
RAW_BATCHES = (1, 2, 4, 8, 16, 32)


@dataclass
class Point:
    """One measured configuration."""

    path: str  # raw | served | naive | end_to_end
    concurrency: int
    batch: int
    images: int
    seconds: float
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"images_per_second": round(self.images_per_second, 2)}


def _point(
    path: str, concurrency: int, batch: int, latencies: list[float], images: int, seconds: float
) -> Point:
    p50, p95, p99 = (np.percentile(latencies, [50, 95, 99]) * 1000).tolist() if latencies else (0, 0, 0)
    return Point(path, concurrency, batch, images, seconds, round(p50, 2), round(p95, 2), round(p99, 2))


def latest_version(repository: Path, model: str) -> Path:
    versions = sorted(
        (entry for entry in (repository / model).iterdir() if entry.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise FileNotFoundError(f"no version of {model} in {repository}")
    return versions[-1]


def measure_raw(
    onnx_path: Path, image: np.ndarray, threads: int, batches: tuple[int, ...], seconds: float
) -> list[Point]:
    """ONNX Runtime in-process with ``threads`` intra-op threads, per batch size."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    points = []
    for batch in batches:
        inputs = {INPUT_NAME: np.repeat(image, batch, axis=0)}
        session.run([OUTPUT_NAME], inputs)  # warm-up
        latencies: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(latencies) < 3:
            sent = time.perf_counter()
            session.run([OUTPUT_NAME], inputs)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
        points.append(_point("raw", 1, batch, latencies, batch * len(latencies), elapsed))
    return points


async def _served(url: str, model: str, images: list[np.ndarray], concurrency: int, seconds: float) -> Point:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    requests = []
    for image in images:
        request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "UINT8")
        request.set_data_from_numpy(image)
        requests.append([request])
    outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
    latencies: list[float] = []
    measuring = False
    deadline = 0.0

    async def user(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await client.infer(model, requests[index % len(requests)], outputs=outputs)
            if measuring:
                latencies.append(time.perf_counter() - sent)
            index += 1

    try:
        deadline = time.perf_counter() + min(1.0, seconds / 3)  # warm-up: fill the batcher, settle
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        measuring = True
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    return _point("served", concurrency, 1, latencies, len(latencies), elapsed)


def measure_served(
    url: str,
    model: str,
    images: list[np.ndarray],
    concurrencies: tuple[int, ...],
    seconds: float,
    metrics_url: str = "",
) -> list[Point]:
    """Triton over gRPC, one request per radiograph, ``concurrency`` requests in flight."""
    from radserve.server_config.triton_metrics import model_counters

    points = []
    for concurrency in concurrencies:
        before = model_counters(metrics_url, model) if metrics_url else None
        point = asyncio.run(_served(url, model, images, concurrency, seconds))
        if before is not None:
            served = model_counters(metrics_url, model) - before
            point.extra["average_batch_size"] = round(served.average_batch_size, 2)
        points.append(point)
        LOGGER.info("served c=%d: %.1f img/s", concurrency, point.images_per_second)
    return points


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_naive(card: ModelCard, images: list[np.ndarray], seconds: float) -> Point:
    """One request at a time to http.server + PyTorch eager in a subprocess, new connection each time."""
    port = _free_port()
    height, width = card.input_size
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "radserve.loadtests.naive_server",
            "--architecture",
            card.architecture,
            "--classes",
            str(card.num_classes),
            "--size",
            str(height),
            str(width),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the naive baseline server did not start")

        def post(image: np.ndarray) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            body = image.tobytes()
            headers = {"X-Shape": ",".join(map(str, image.shape)), "Content-Type": "application/octet-stream"}
            connection.request("POST", "/predict", body=body, headers=headers)
            reply = connection.getresponse()
            json.loads(reply.read())
            connection.close()

        for image in images[:3]:
            post(image)
        latencies: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds or len(latencies) < 3:
            sent = time.perf_counter()
            post(images[len(latencies) % len(images)])
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return _point("naive", 1, 1, latencies, len(latencies), elapsed)


def measure_end_to_end(url: str, model: str, folder: Path, seconds: float, max_in_flight: int) -> Point:
    """The classify runner over ``folder`` (repeated until ``seconds``): DICOM files to result rows."""
    from radserve.client.classify import ClassifyOptions, classify
    from radserve.client.inputs import discover

    files = discover([folder]).files
    latencies: list[float] = []
    radiographs = errors = 0
    elapsed = 0.0
    options = ClassifyOptions(url=url, max_in_flight=max_in_flight)

    def on_rows(rows: list[Any]) -> None:
        latencies.extend((row.latency_ms or 0) / 1000 for row in rows if row.status == "ok")

    while elapsed < seconds or not radiographs:
        summary = asyncio.run(classify(files, model, on_rows, options))
        radiographs += summary.radiographs
        errors += summary.errors
        elapsed += summary.seconds
        if not summary.radiographs:
            break
    point = _point("end_to_end", max_in_flight, 1, latencies, radiographs, elapsed)
    point.extra.update(files=len(files), errors=errors, workers=options.workers)
    return point


def wire_images(card: ModelCard, folder: Path | None, count: int = 16) -> list[np.ndarray]:
    """``uint8 [1, 1, H, W]`` requests, preprocessed by the client's pipeline."""
    from radserve.loadtests.images import wire_images as from_folder

    return from_folder(card, str(folder or ""), count)


@dataclass
class BenchResult:
    model: str
    architecture: str
    input_size: tuple[int, int]
    cpu_count: int
    onnxruntime_threads: int
    raw: list[Point]
    served: list[Point]
    naive: Point | None
    end_to_end: Point | None

    @property
    def raw_best(self) -> Point:
        return max(self.raw, key=lambda p: p.images_per_second)

    @property
    def served_best(self) -> Point:
        return max(self.served, key=lambda p: p.images_per_second)

    def ratios(self) -> dict[str, float]:
        served = self.served_best.images_per_second
        ratios = {"served_over_raw": served / self.raw_best.images_per_second}
        if self.naive is not None:
            ratios["served_over_naive"] = served / self.naive.images_per_second
        if self.end_to_end is not None:
            ratios["end_to_end_over_served"] = self.end_to_end.images_per_second / served
        return {key: round(value, 3) for key, value in ratios.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "architecture": self.architecture,
            "input_size": list(self.input_size),
            "cpu_count": self.cpu_count,
            "onnxruntime_threads": self.onnxruntime_threads,
            "raw": [p.to_dict() for p in self.raw],
            "served": [p.to_dict() for p in self.served],
            "naive": self.naive.to_dict() if self.naive else None,
            "end_to_end": self.end_to_end.to_dict() if self.end_to_end else None,
            "ratios": self.ratios(),
        }

    def table(self) -> str:
        raw_best = self.raw_best.images_per_second
        naive = self.naive.images_per_second if self.naive else 0.0
        lines = [
            f"{self.model} ({self.architecture} @ {self.input_size[0]}x{self.input_size[1]}), "
            f"{self.cpu_count} CPUs, ORT threads {self.onnxruntime_threads}",
            f"{'path':<12} {'conc':>4} {'batch':>5} {'img/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'/raw':>6} {'/naive':>7}",
        ]
        rows = [*self.raw, *self.served, *(p for p in (self.naive, self.end_to_end) if p is not None)]
        for p in rows:
            ips = p.images_per_second
            versus_naive = f"{ips / naive:>7.2f}" if naive else f"{'-':>7}"
            best = " *" if p is self.raw_best or p is self.served_best else ""
            lines.append(
                f"{p.path:<12} {p.concurrency:>4} {p.batch:>5} {ips:>8.1f} {p.p50_ms:>8.1f} {p.p95_ms:>8.1f} "
                f"{p.p99_ms:>8.1f} {ips / raw_best:>6.2f} {versus_naive}{best}"
            )
        ratios = ", ".join(f"{key} {value:.2f}" for key, value in self.ratios().items())
        lines.append(f"best served/raw and ratios: {ratios}  (* = best of its path)")
        return "\n".join(lines)


def plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrency = [p.concurrency for p in result.served]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(concurrency, [p.images_per_second for p in result.served], "o-", label="served (Triton, gRPC)")
    left.axhline(
        result.raw_best.images_per_second, color="k", ls="--", label=f"raw ORT (b{result.raw_best.batch})"
    )
    right.plot(concurrency, [p.p95_ms for p in result.served], "o-", label="served p95")
    if result.naive is not None:
        left.axhline(result.naive.images_per_second, color="r", ls=":", label="naive (http.server + torch)")
        right.axhline(result.naive.p95_ms, color="r", ls=":", label="naive p95")
    if result.end_to_end is not None:
        e2e = result.end_to_end
        left.plot([e2e.concurrency], [e2e.images_per_second], "s", color="g", label="end-to-end from DICOM")
        right.plot([e2e.concurrency], [e2e.p95_ms], "s", color="g", label="end-to-end request p95")
    for axis, label in ((left, "radiographs/s"), (right, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrency, [str(c) for c in concurrency])
        axis.set_xlabel("requests in flight")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(
        f"radserve bench: {result.architecture} @ {result.input_size[0]} px, {result.cpu_count} CPUs"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run(args: argparse.Namespace) -> BenchResult:
    from radserve.server_config.triton import TritonServer, free_ports

    quick = args.quick
    seconds = args.seconds or (1.0 if quick else 5.0)
    concurrencies = tuple(args.concurrency or ((1, 4, 16) if quick else CONCURRENCIES))
    batches = (1, 8) if quick else RAW_BATCHES
    card = ModelCard.read(latest_version(args.repository, args.model))
    # The engine's limit on this machine: one session using every core (the served path splits the
    # same cores between instances, client and server).
    threads = args.ort_threads or os.cpu_count() or 1
    images = wire_images(card, args.dicom)
    raw = measure_raw(
        latest_version(args.repository, args.model) / "model.onnx", images[0], threads, batches, seconds
    )
    naive = None if args.no_naive else measure_naive(card, images, seconds)
    with tempfile.TemporaryDirectory(prefix="radserve-bench-") as work:
        folder = args.dicom
        if folder is None:
            from radserve.synthetic.dataset import write_synthetic_set

            folder = Path(work) / "dicom"
            write_synthetic_set(folder, 12 if quick else 60, seed=3, matrix=(640, 528))
        with TritonServer(args.repository, ports=free_ports()) as server:
            served = measure_served(
                server.grpc_url, args.model, images, concurrencies, seconds, server.metrics_url
            )
            end_to_end = measure_end_to_end(
                server.grpc_url, args.model, folder, seconds if quick else 2 * seconds, args.max_in_flight
            )
    return BenchResult(
        args.model,
        card.architecture,
        card.input_size,
        os.cpu_count() or 1,
        threads,
        raw,
        served,
        naive,
        end_to_end,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from radserve.settings import SETTINGS

    parser.add_argument("--model", required=True, help="model name in the repository")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="DICOM folder for requests and the end-to-end path")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help=f"served concurrencies (default {CONCURRENCIES})"
    )
    parser.add_argument("--seconds", type=float, help="measuring time per point (default 5, quick 1)")
    parser.add_argument("--ort-threads", type=int, help="raw engine threads (default: all cores)")
    parser.add_argument("--max-in-flight", type=int, default=SETTINGS.client.max_in_flight)
    parser.add_argument("--no-naive", action="store_true", help="skip the PyTorch eager baseline")
    parser.add_argument("--quick", action="store_true", help="1 s points, concurrency 1/4/16 (< 60 s)")
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="folder for bench.json/png")


def main(args: argparse.Namespace) -> int:
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot(result, args.out / "bench.png")
    print(result.table())
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0
