"""The GPU check's ``cpu_target`` stage: the embedded CPU target on the GPU host's cores.

The demo checkpoint exported to the embedded target (ONNX Runtime in Triton's Python backend, fp32),
its engine limit measured raw (ONNX Runtime in-process, the best of one session on every core's
threads and one single-threaded session per core, batches 1/8/32), then served by tritonserver
sized for this host (``radserve serve`` sets the instances from the cores) and loaded over gRPC by
client processes on the same cores, with radiographs packed per request. The figure is served /
engine limit at the best served point (last measured 0.71 with an older client; goal 0.9).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radserve.loadtests.gpu_check import Paths

LOGGER = logging.getLogger("gpu-check")
MODEL = "demo_cpu_target"
POINTS = ((1, 64), (8, 16), (8, 32), (32, 8))  # (radiographs per request, requests in flight)
DRY_RUN_POINTS = ((1, 2), (8, 2))
RAW_BATCHES = (1, 8, 32)


def stage_cpu_target(paths: Paths) -> dict[str, Any]:
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.export.train import synthetic_wire_images
    from radserve.loadtests.gpu_check import save_partial
    from radserve.loadtests.gpu_served import measure_point
    from radserve.loadtests.raw import measure_raw
    from radserve.server_config.triton import TritonServer, free_ports

    repository = paths.work / "cpu-target"
    samples = 4 if paths.dry_run else 16
    variant = export_checkpoint(ExportRequest(paths.checkpoint, MODEL, repository, samples=samples)).variants[
        0
    ]
    onnx_path = next(variant.version_dir.glob("*.onnx"))
    images, _ = synthetic_wire_images(32, variant.card, (512, 416), seed=3)
    wire = [image[None] for image in images]
    seconds = 0.5 if paths.dry_run else 2.0
    raw = measure_raw(onnx_path, wire, seconds, RAW_BATCHES, repeats=1)
    best = max(raw, key=lambda point: point.images_per_second)
    result: dict[str, Any] = {
        "cores": os.cpu_count(),
        "engine": "onnxruntime fp32",
        "raw": [
            {"layout": point.layout, "batch": point.batch, "img_per_s": round(point.images_per_second, 1)}
            for point in raw
        ],
        "engine_limit_img_per_s": round(best.images_per_second, 1),
        "engine_limit_layout": f"{best.layout}, batch {best.batch}",
        "points": [],
    }
    LOGGER.info("cpu target engine limit %s", result["engine_limit_img_per_s"])
    save_partial(paths, "cpu_target", result)
    log = paths.work / "tritonserver-cpu.log"
    server = TritonServer(repository, ports=free_ports(), log_file=log)
    server.start(timeout=150)
    (paths.work / "tritonserver.pid").write_text(str(server.pid))
    try:
        with ProcessPoolExecutor(8, mp_context=get_context("spawn")) as pool:
            for per_request, in_flight in DRY_RUN_POINTS if paths.dry_run else POINTS:
                point = measure_point(
                    pool, server.grpc_url, MODEL, per_request, in_flight, paths.input_size, seconds + 1
                )
                point["over_engine_limit"] = round(point["img_per_s"] / best.images_per_second, 3)
                result["points"].append(point)
                LOGGER.info("cpu target served %s", point)
                save_partial(paths, "cpu_target", result)
    finally:
        server.stop()
        (paths.work / "tritonserver.pid").unlink(missing_ok=True)
    top = max(result["points"], key=lambda point: point["img_per_s"])
    result["served_over_engine_limit"] = top["over_engine_limit"]
    return result
