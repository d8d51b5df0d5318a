"""The GPU check's ``served`` stage: tritonserver serving the embedded-gpu model, over gRPC.

Parity: the served probabilities of synthetic radiographs against PyTorch fp32 on the CPU (the
reference export gates against). Load: client processes (spawned, each with threads holding their
own gRPC channel and sending synchronous requests) keep ``in flight`` requests of ``per request``
radiographs busy for a few seconds per point; radiographs/s, p50 and p99 per point.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from radserve.loadtests.gpu_check import Paths

LOGGER = logging.getLogger("gpu-check")

# (radiographs per request, requests in flight)
POINTS = ((1, 64), (1, 256), (8, 32), (32, 16), (128, 4), (128, 8))
DRY_RUN_POINTS = ((1, 2), (8, 2))
CLIENT_PROCESSES = 8
PARITY_IMAGES = 64


def _infer(client: Any, model: str, images: np.ndarray) -> np.ndarray:
    from tritonclient.grpc import InferInput, InferRequestedOutput

    from radserve.model_card import INPUT_NAME, OUTPUT_NAME

    tensor = InferInput(INPUT_NAME, list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer(model, [tensor], outputs=[InferRequestedOutput(OUTPUT_NAME)])
    response = result.get_response()
    if not any(len(raw) for raw in response.raw_output_contents):
        detail = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
        raise RuntimeError(
            f"empty output for {images.shape}: outputs {detail}, "
            f"raw sizes {[len(raw) for raw in response.raw_output_contents]}, "
            f"contents {[str(o.contents)[:80] for o in response.outputs]}"
        )
    return result.as_numpy(OUTPUT_NAME)


def load_worker(
    url: str,
    model: str,
    per_request: int,
    threads: int,
    size: int,
    warmup: float,
    seconds: float,
    channels: int = 1,
) -> tuple[int, list[float]]:
    """``threads`` synchronous gRPC loops for ``warmup + seconds``; radiographs (or studies of
    ``channels``) done and latencies (s) after the warm-up."""
    import tritonclient.grpc as grpcclient

    shape = (per_request, channels, size, size)
    images = np.random.default_rng(os.getpid()).integers(0, 256, shape, dtype=np.uint8)
    start = time.monotonic()
    measure_from, stop = start + warmup, start + warmup + seconds
    counts, latencies, errors = [0] * threads, [[] for _ in range(threads)], []

    def loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            while (now := time.monotonic()) < stop:
                _infer(client, model, images)
                if now >= measure_from:
                    latencies[index].append(time.monotonic() - now)
                    counts[index] += per_request
        except Exception as error:  # reported to the stage, which fails with it
            errors.append(error)
        finally:
            client.close()

    workers = [threading.Thread(target=loop, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed: {errors[0]}")
    return sum(counts), [value for part in latencies for value in part]


def measure_point(
    pool: ProcessPoolExecutor,
    url: str,
    model: str,
    per_request: int,
    in_flight: int,
    size: int,
    seconds: float,
    channels: int = 1,
) -> dict[str, Any]:
    processes = min(CLIENT_PROCESSES, in_flight)
    shares = [in_flight // processes + (index < in_flight % processes) for index in range(processes)]
    warmup = min(1.0, seconds / 2)
    futures = [
        pool.submit(load_worker, url, model, per_request, share, size, warmup, seconds, channels)
        for share in shares
    ]
    results = [future.result(timeout=seconds + warmup + 60) for future in futures]
    done = sum(count for count, _ in results)
    latencies = np.array([value for _, part in results for value in part]) * 1000.0
    return {
        "per_request": per_request,
        "in_flight": in_flight,
        "img_per_s": round(done / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2) if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2) if len(latencies) else None,
        "requests": len(latencies),
    }


def served_parity(url: str, paths: Paths, model: str) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    from radserve.export.checkpoint import load_checkpoint
    from radserve.export.parity import compare, torch_probabilities
    from radserve.export.train import synthetic_wire_images

    loaded = load_checkpoint(paths.checkpoint, model)
    count = 16 if paths.dry_run else PARITY_IMAGES
    images, _ = synthetic_wire_images(count, loaded.card, (512, 416), seed=7)
    reference = torch_probabilities(loaded.model, loaded.card, images)  # PyTorch fp32 on the CPU
    client = grpcclient.InferenceServerClient(url)
    try:
        served = np.concatenate([_infer(client, model, images[i : i + 8]) for i in range(0, count, 8)])
    finally:
        client.close()
    return compare(reference, served, "pytorch fp32 cpu").to_dict()


def stage_served(paths: Paths) -> dict[str, Any]:
    from radserve.loadtests.gpu_check import save_partial
    from radserve.server_config.triton import TritonServer, free_ports

    model = paths.served_model
    log = paths.work / "tritonserver.log"
    server = TritonServer(paths.served_repository, ports=free_ports(), log_file=log)
    started = time.monotonic()
    server.start(timeout=150)
    (paths.work / "tritonserver.pid").write_text(str(server.pid))
    result: dict[str, Any] = {"model": model, "server_ready_seconds": round(time.monotonic() - started, 1)}
    try:
        result["parity"] = served_parity(server.grpc_url, paths, model)
        LOGGER.info("served parity %s", result["parity"])
        save_partial(paths, "served", result)
        points = DRY_RUN_POINTS if paths.dry_run else POINTS
        seconds = 1.0 if paths.dry_run else 3.0
        result["points"] = []
        context = get_context("spawn")  # gRPC's threads are never forked
        with ProcessPoolExecutor(CLIENT_PROCESSES, mp_context=context) as pool:
            for per_request, in_flight in points:
                point = measure_point(
                    pool, server.grpc_url, model, per_request, in_flight, paths.input_size, seconds
                )
                LOGGER.info("served %s", point)
                result["points"].append(point)
                save_partial(paths, "served", result)
    finally:
        server.stop()
        (paths.work / "tritonserver.pid").unlink(missing_ok=True)
    return result
