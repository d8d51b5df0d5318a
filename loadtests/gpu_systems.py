"""The GPU check's ``systems`` stage: the five systems' networks on the GPU, raw and served.

Each system's study architecture (random weights: throughput does not depend on them) is exported
with the system's contract to ``embedded-gpu`` fp16 (the parity gate on a few samples against
PyTorch fp32 on the CPU; top-1 is not gated, random weights give near-uniform probabilities), timed
raw with the backend's own module (PyTorch fp16 + CUDA graphs, padded batch sizes), then all five
are served by one tritonserver and loaded over gRPC at one point per system: served/raw at the same
number of inputs per request. The MRI system's inputs are its ``[6, H, W]`` study tensors.
A dry run exports only ``body-region`` to the embedded (CPU) target, to exercise the stage.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from radserve.loadtests.gpu_check import Paths

LOGGER = logging.getLogger("gpu-check")

MAX_BATCH = 32
RAW_BATCHES = (1, 8, 32)
PER_REQUEST, IN_FLIGHT = 8, 16  # the served point: 128 inputs in flight
PARITY_SAMPLES = 4
DRY_RUN_SYSTEMS = ("body-region",)


def _export(paths: Paths, system: str) -> tuple[str, Any]:
    """The system exported into the stage's repository; (served model name, its card)."""
    from radserve.export.gpu_export import gpu_serving_options
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.loadtests.random_checkpoint import write_system_checkpoint

    checkpoint = write_system_checkpoint(system, paths.work / "systems" / f"{system}.pt")
    repository = paths.work / "systems" / "repository"
    if paths.dry_run:  # Triton refuses KIND_GPU without a GPU: the CPU target exercises the stage
        request = ExportRequest(
            checkpoint, system, repository, samples=2, min_top1_agreement=0, system=system
        )
        return system, export_checkpoint(request).variants[0].card
    options = gpu_serving_options()
    options = replace(options, batching=replace(options.batching, max_batch_size=MAX_BATCH))
    request = ExportRequest(
        checkpoint,
        system,
        repository,
        target="embedded-gpu",
        samples=PARITY_SAMPLES,
        min_top1_agreement=0,
        options=options,
        precisions=("fp16",),
        system=system,
    )
    variant = export_checkpoint(request).variants[0]
    return variant.card.name, variant.card


def _raw(paths: Paths, model: str, card: Any, seconds: float) -> dict[str, float]:
    import torch

    from radserve.export.gpu_model import load_runner
    from radserve.export.model_config import padded_batch_sizes
    from radserve.model_card import model_versions

    folder = paths.work / "systems" / "repository" / model
    version = folder / str(model_versions(folder)[-1])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    runner = load_runner(str(version), padded_batch_sizes(MAX_BATCH), device)
    height, width = card.input_size
    rng = np.random.default_rng(0)
    rates = {}
    for batch in RAW_BATCHES:
        images = rng.integers(0, 256, (batch, card.channels, height, width), dtype=np.uint8)
        runner.infer([images])
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds or count < 3:
            runner.infer([images])
            count += 1
        rates[str(batch)] = round(batch * count / (time.perf_counter() - begin), 1)
    return rates


def stage_systems(paths: Paths) -> dict[str, Any]:
    from radserve.loadtests.gpu_check import save_partial
    from radserve.loadtests.gpu_served import measure_point
    from radserve.server_config.triton import TritonServer, free_ports
    from radserve.systems import SYSTEMS

    names = DRY_RUN_SYSTEMS if paths.dry_run else tuple(SYSTEMS)
    per_request, in_flight = (2, 2) if paths.dry_run else (PER_REQUEST, IN_FLIGHT)
    result: dict[str, Any] = {
        "max_batch_size": MAX_BATCH,
        "served_point": [per_request, in_flight],
        "systems": {},
    }
    exported = {}
    for system in names:
        started = time.monotonic()
        model, card = _export(paths, system)
        exported[system] = (model, card)
        entry: dict[str, Any] = {
            "model": model,
            "architecture": card.architecture,
            "input": [card.channels, *card.input_size],
            "export_seconds": round(time.monotonic() - started, 1),
        }
        if not paths.dry_run:  # the dry run's CPU twin has no backend module to time in-process
            entry["raw_img_per_s"] = _raw(paths, model, card, 1.0)
        result["systems"][system] = entry
        LOGGER.info("system %s: %s", system, entry)
        save_partial(paths, "systems", result)
    log = paths.work / "tritonserver-systems.log"
    server = TritonServer(paths.work / "systems" / "repository", ports=free_ports(), log_file=log)
    server.start(timeout=180)
    (paths.work / "tritonserver.pid").write_text(str(server.pid))
    try:
        with ProcessPoolExecutor(8, mp_context=get_context("spawn")) as pool:
            for system, (model, card) in exported.items():
                if card.input_size[0] != card.input_size[1]:
                    raise RuntimeError(f"{system}: the load generator sends square inputs only")
                point = measure_point(
                    pool,
                    server.grpc_url,
                    model,
                    per_request,
                    in_flight,
                    card.input_size[0],
                    1.0 if paths.dry_run else 3.0,
                    channels=card.channels,
                )
                entry = result["systems"][system]
                entry["served"] = point
                raw = entry.get("raw_img_per_s", {}).get(str(per_request))
                if raw:
                    entry["served_over_raw"] = round(point["img_per_s"] / raw, 2)
                LOGGER.info("system %s served: %s", system, point)
                save_partial(paths, "systems", result)
    finally:
        server.stop()
        (paths.work / "tritonserver.pid").unlink(missing_ok=True)
    return result
