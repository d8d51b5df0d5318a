"""``radserve bench``: raw engine, served path, naive baseline and end-to-end path, side by side.

One run on one machine and one model file, so the ratios compare like with like:

- **raw**: ONNX Runtime on the served ``model.onnx`` in every layout of ``loadtests/raw.py`` (one
  session on all cores' threads; one single-threaded session per core in separate processes, as
  served) at batches 1-32: the best of them is the engine's limit on this host;
- **served**: Triton over gRPC (asyncio client, one channel) at concurrencies 1, 2, 4, 8, 16;
- **naive**: ``loadtests/naive_server.py`` (ThreadingHTTPServer + PyTorch eager at the served
  precision where PyTorch has it) at the same concurrencies;
- **end-to-end**: ``radserve classify``'s runner over a DICOM folder (decode + display + resize + serve).

Every point gets the same warm-up and is measured ``--repeats`` times, interleaved
(``loadtests/points.py``). Prints a table (median and range), writes ``bench.json`` (every run) and
``bench.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radserve.errors import ConfigurationError, ModelCardError
from radserve.loadtests import cpu_profile
from radserve.loadtests.bench_options import CONCURRENCIES, PER_REQUEST
from radserve.loadtests.bench_report import BenchResult, plot
from radserve.loadtests.end_to_end import measure_end_to_end
from radserve.loadtests.peer_report import PeersResult
from radserve.loadtests.points import (
    REPEATS,
    Point,
    Run,
    config_label,
    interleaved,
    packed,
    timed_run,
    warm_up_seconds,
)
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, ModelCard, model_versions

if TYPE_CHECKING:  # the client is imported when a bench runs (the CLI imports this module)
    from radserve.client.connection import ConnectionOptions

LOGGER = logging.getLogger(__name__)


def latest_version(repository: Path, model: str) -> Path:
    """The newest version folder of ``model`` (:func:`radserve.model_card.model_versions`)."""
    versions = model_versions(repository / model)
    if not versions:
        raise ModelCardError(f"no version of model {model!r} in {repository}")
    return repository / model / str(versions[-1])


async def _served(
    connection: str | ConnectionOptions,
    model: str,
    images: Sequence[np.ndarray],
    concurrency: int,
    seconds: float,
    server_pid: int | None = None,
    per_request: int = 1,
) -> Run:
    import tritonclient.grpc.aio as grpcclient

    from radserve.client.connection import ConnectionOptions
    from radserve.client.grpc_client import grpc_channel

    target = ConnectionOptions.of(connection)
    clients = [grpc_channel(url, target.tls) for url in target.urls]  # users take turns
    requests = []
    for image in packed(images, per_request):
        request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "UINT8")
        request.set_data_from_numpy(image)
        requests.append([request])
    outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
    latencies: list[float] = []
    measuring = False
    deadline = 0.0

    async def user(offset: int) -> None:
        index, client = offset, clients[offset % len(clients)]
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            await client.infer(model, requests[index % len(requests)], outputs=outputs)
            if measuring:
                latencies.append(time.perf_counter() - sent)
            index += concurrency

    try:
        deadline = time.perf_counter() + warm_up_seconds(seconds)  # fill the batcher, settle
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        measuring = True
        cpu_before = cpu_profile.sample(server_pid) if server_pid else None
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_profile.sample(server_pid) if server_pid else None
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    run = timed_run(latencies, len(latencies) * per_request, elapsed)
    if cpu_before is not None and cpu_after is not None:
        run.extra["cpu_ms_per_image"] = cpu_profile.per_image(cpu_before, cpu_after, run.images)
    return run


def measure_served(
    connection: str | ConnectionOptions,
    model: str,
    images: Sequence[np.ndarray],
    configs: Sequence[tuple[int, int]],
    seconds: float,
    metrics_url: str = "",
    repeats: int = REPEATS,
    server_pid: int | None = None,
) -> list[Point]:
    """Triton over gRPC (a URL, or the connection flags' servers) at each (requests in flight,
    radiographs per request) of ``configs``; with ``server_pid``, each run's CPU cost per radiograph
    by process (:mod:`.cpu_profile`)."""
    from radserve.server_config.triton_metrics import model_counters

    def measure(config: tuple[int, int]) -> Run:
        concurrency, per_request = config
        before = model_counters(metrics_url, model) if metrics_url else None
        run = asyncio.run(_served(connection, model, images, concurrency, seconds, server_pid, per_request))
        if before is not None:  # includes the warm-up's requests: same load, same batches
            run.extra["average_batch_size"] = round(
                (model_counters(metrics_url, model) - before).average_batch_size, 2
            )
        LOGGER.info("served %s: %.1f img/s", config_label(*config), run.images_per_second)
        return run

    runs = interleaved(list(configs), measure, repeats)
    points = [Point("served", c, k, point_runs) for (c, k), point_runs in zip(configs, runs, strict=True)]
    for point in points:
        batches = [run.extra["average_batch_size"] for run in point.runs if "average_batch_size" in run.extra]
        if batches:
            point.extra["average_batch_size"] = float(np.median(batches))
    return points


def wire_images(card: ModelCard, folder: Path | None, count: int = 16) -> list[np.ndarray]:
    """``uint8 [1, 1, H, W]`` requests, preprocessed by the client's pipeline."""
    from radserve.loadtests.images import wire_images as from_folder

    return from_folder(card, str(folder or ""), count)


def _subject(
    args: argparse.Namespace, work: Path
) -> tuple[Path, str, ModelCard, list[np.ndarray], Path | None]:
    """What is benchmarked: repository, model, card, requests and the end-to-end folder (if any)."""
    if args.system:
        from radserve.loadtests.system_bench import system_model

        exported = system_model(args.system, work)
        card = ModelCard.read(latest_version(exported.repository, exported.model))
        return exported.repository, exported.model, card, exported.images, exported.dicom
    card = ModelCard.read(latest_version(args.repository, args.model))
    folder = args.dicom
    images = wire_images(card, folder)
    if folder is None:
        from radserve.synthetic.dataset import write_synthetic_set

        folder = work / "dicom"
        write_synthetic_set(folder, 12 if args.quick else 60, seed=3, matrix=(640, 528))
    return args.repository, args.model, card, images, folder


@contextlib.contextmanager
def _servers(
    repository: Path, connection: ConnectionOptions | None
) -> Iterator[tuple[ConnectionOptions, str, int | None]]:
    """The servers measured, their metrics URL and pid: ``connection``'s, or one started here."""
    if connection is not None:
        yield connection, "", None
        return
    from radserve.server_config.triton import TritonServer, free_ports

    with TritonServer(repository, ports=free_ports()) as server:
        from radserve.client.connection import ConnectionOptions

        yield ConnectionOptions(server.grpc_url), server.metrics_url, server.pid


def run(args: argparse.Namespace, connection: ConnectionOptions | None = None) -> BenchResult:
    """The bench of ``args``; served and end-to-end against ``connection``'s servers when given
    (``--url``: the raw and naive lines still run here, on the repository's copy of the model)."""
    from radserve.loadtests.naive import measure_naive
    from radserve.loadtests.raw import BATCHES, measure_raw
    from radserve.settings import SETTINGS, cpu_split

    load_before = os.getloadavg()[0]
    quick = args.quick
    seconds = args.seconds or (0.5 if quick else 5.0)
    repeats = args.repeats
    concurrencies = tuple(args.concurrency or ((1, 4, 16) if quick else CONCURRENCIES))
    per_request = tuple(args.images_per_request or ((1,) if quick else PER_REQUEST))
    configs = [(c, k) for k in per_request for c in concurrencies]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="radserve-bench-") as work:
        repository, model, card, images, folder = _subject(args, Path(work))
        version = latest_version(repository, model)
        batches = args.batches or ((1, 8) if quick else BATCHES)
        raw = measure_raw(version / "model.onnx", images, seconds, batches, cores, repeats)
        skip_naive = args.no_naive or args.system
        naive, naive_precision = (
            ([], "") if skip_naive else measure_naive(card, images, configs, seconds, repeats)
        )
        with _servers(repository, connection) as (target, metrics_url, pid):
            served = measure_served(target, model, images, configs, seconds, metrics_url, repeats, pid)
            end_to_end = None
            if folder is not None:
                span = seconds if quick else 2 * seconds
                end_to_end = measure_end_to_end(target, model, folder, span, args.max_in_flight, repeats, pid)
    instances, threads = cpu_split(SETTINGS.batching.max_cpu_instances, cores)
    return BenchResult(
        model=model,
        architecture=card.architecture,
        input_size=card.input_size,
        precision=card.precision,
        cpu_count=cores,
        served_layout=f"{instances}x{threads}",
        raw=raw,
        served=served,
        naive=naive,
        naive_precision=naive_precision,
        end_to_end=end_to_end,
        repeats=repeats,
        seconds=seconds,
        load_before=load_before,
    )


def run_peers(args: argparse.Namespace) -> PeersResult:
    """radserve and the chosen peers (:mod:`.peers`) on the model's ``model.onnx``, with its engine limit."""
    from importlib import metadata

    from radserve.loadtests.peers import chosen, compare
    from radserve.loadtests.raw import measure_raw
    from radserve.settings import SETTINGS, cpu_split

    seconds = args.seconds or 3.0
    concurrencies = tuple(args.concurrency or (1, 4, 16))
    per_request = tuple(args.images_per_request or PER_REQUEST)
    configs = [(c, k) for k in per_request for c in concurrencies]
    peers = chosen(args.peers)
    cores = os.cpu_count() or 1
    layout = cpu_split(SETTINGS.batching.max_cpu_instances, cores)  # the embedded target's, for all
    card = ModelCard.read(latest_version(args.repository, args.model))
    onnx_path = latest_version(args.repository, args.model) / "model.onnx"
    images = wire_images(card, args.dicom, 120)
    raw = measure_raw(onnx_path, images, seconds, args.batches or (1, 8, 32), cores, args.repeats)
    points = compare(
        onnx_path, args.repository, args.model, images, configs, seconds, args.repeats, peers,
        args.peer_environments, layout,
    )  # fmt: skip
    servers: dict[str, list[Point]] = {}
    for point in points:
        servers.setdefault(point.path, []).append(point)
    return PeersResult(
        model=args.model,
        architecture=card.architecture,
        precision=card.precision,
        input_size=card.input_size,
        cpu_count=cores,
        layout=layout,
        onnxruntime=metadata.version("onnxruntime"),
        raw=raw,
        servers=servers,
        peers={
            peer.name: {
                "protocol": peer.protocol,
                "batching": peer.batching,
                "requirements": ", ".join(peer.requirements),
            }
            for peer in peers
        },
        repeats=args.repeats,
        seconds=seconds,
    )


def run_engines(args: argparse.Namespace) -> dict[str, Any]:
    """The raw engines (:mod:`.engines`) on the model's ``model.onnx`` and its ``_int8`` variant."""
    from radserve.loadtests.engines import compare_engines
    from radserve.loadtests.raw import ENGINES

    card = ModelCard.read(latest_version(args.repository, args.model))
    variants = {"fp32": latest_version(args.repository, args.model) / "model.onnx"}
    if (args.repository / f"{args.model}_int8").is_dir():
        variants["int8"] = latest_version(args.repository, f"{args.model}_int8") / "model.onnx"
    seconds = args.seconds or 3.0
    images = wire_images(card, args.dicom, 32)
    engines = compare_engines(
        variants, images, seconds, args.batches or (1, 8, 32), args.repeats, args.engines or ENGINES
    )
    return {
        "model": args.model,
        "architecture": card.architecture,
        "input_size": list(card.input_size),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "seconds": seconds,
        "engines": engines,
    }


def main(args: argparse.Namespace, connection: ConnectionOptions | None = None) -> int:
    """Run the bench ``args`` ask for; ``connection``: the running servers ``--url`` named."""
    if connection is not None and (args.engines is not None or args.peers is not None or args.system):
        raise ConfigurationError(
            "radserve bench --url measures a running server: not with --engines/--peers/--system"
        )
    if args.engines is not None:
        if args.model is None:
            raise ConfigurationError("radserve bench --engines needs --model (a model of the repository)")
        from radserve.loadtests.engines import engines_table

        engines = run_engines(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "engines.json").write_text(json.dumps(engines, indent=2) + "\n")
        print(engines_table(engines))
        print(f"wrote {args.out / 'engines.json'}")
        return 0
    if args.peers is not None:
        if args.model is None:
            raise ConfigurationError("radserve bench --peers needs --model (a model of the repository)")
        peers = run_peers(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "peers.json").write_text(json.dumps(peers.to_dict(), indent=2) + "\n")
        print(peers.table())
        print(f"wrote {args.out / 'peers.json'}")
        return 0
    result = run(args, connection)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    plot(result, args.out / "bench.png")
    print(result.table())
    for warning in result.warnings():
        print(f"WARNING: {warning}")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0
