"""The GPU check's ``tensorrt`` stage: does the host have TensorRT, and what does a plan give.

The probe reports each way TensorRT can be present: the ``tensorrt`` Python module, ``trtexec`` on
the PATH, ``torch_tensorrt``, and ONNX Runtime's TensorRT execution provider, with versions. Where
the module and a GPU are there, the demo checkpoint is exported to ONNX (fp32, and the fp16 mixed
precision radserve publishes), built into plans with radserve's own builder
(:func:`radserve.export.tensorrt_plan.build_engine`), checked with radserve's plan checks
(:func:`~radserve.export.tensorrt_plan.check_plan`), compared with PyTorch fp32 on the CPU (the parity
reference) and timed raw at a few batch sizes, against the ``raw`` stage's PyTorch fp16 + CUDA graphs.
Without TensorRT the stage succeeds with the probe alone: its absence is the finding.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from radserve.loadtests.gpu_check import Paths
    from radserve.model_card import Precision

LOGGER = logging.getLogger("gpu-check")
BATCHES = (1, 8, 32, 128)
PARITY_IMAGES = 32


def _version(package: str) -> str | None:
    if importlib.util.find_spec(package.replace("-", "_")) is None:
        return None
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "installed (no distribution metadata)"


def probe() -> dict[str, Any]:
    """Where TensorRT is on this host and which version; ``None`` for each way it is absent."""
    found: dict[str, Any] = {
        "tensorrt": None,
        "trtexec": None,
        "torch_tensorrt": None,
        "onnxruntime_trt": None,
    }
    try:
        import tensorrt

        found["tensorrt"] = str(tensorrt.__version__)
    except Exception as error:  # ImportError, or a broken install: both mean "not usable"
        found["tensorrt_error"] = f"{type(error).__name__}: {error}"
    trtexec = shutil.which("trtexec")
    if trtexec:
        banner = subprocess.run([trtexec, "--help"], capture_output=True, text=True, timeout=30, check=False)
        first = (banner.stdout or banner.stderr).strip().splitlines()
        found["trtexec"] = {"path": trtexec, "banner": first[0] if first else ""}
    found["torch_tensorrt"] = _version("torch-tensorrt")
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        found["onnxruntime_providers"] = providers
        if "TensorrtExecutionProvider" in providers:
            found["onnxruntime_trt"] = onnxruntime.__version__
    except ImportError:
        found["onnxruntime_providers"] = None
    return found


def _onnx_variants(paths: Paths) -> dict[Precision, Path]:
    """The demo checkpoint as fp32 ONNX and its fp16 mixed-precision copy, in the work folder."""
    from radserve.export.checkpoint import load_checkpoint
    from radserve.export.onnx_export import export_onnx
    from radserve.export.precision import convert_fp16

    loaded = load_checkpoint(paths.checkpoint, "demo")
    fp32 = paths.work / "tensorrt" / "demo-fp32.onnx"
    export_onnx(loaded.model, loaded.card, fp32)
    fp16 = fp32.with_name("demo-fp16.onnx")
    convert_fp16(fp32, fp16)
    return {"fp32": fp32, "fp16": fp16}


def _raw_rates(plan: Path, size: int, batches: tuple[int, ...], seconds: float) -> dict[str, float]:
    """img/s of the plan at each batch: one engine and execution context, device buffers, one stream."""
    import tensorrt as trt
    import torch

    from radserve.model_card import INPUT_NAME, OUTPUT_NAME

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    rates = {}
    for batch in batches:
        images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, device="cuda")
        context.set_input_shape(INPUT_NAME, tuple(images.shape))
        output = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(INPUT_NAME, images.data_ptr())
        context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        for _ in range(3):
            context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds or count < 3:
            for _ in range(10):
                context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            count += 10
        rates[str(batch)] = round(batch * count / (time.perf_counter() - begin), 1)
    return rates


def stage_tensorrt(paths: Paths) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {"probe": probe()}
    LOGGER.info("tensorrt probe: %s", result["probe"])
    if result["probe"]["tensorrt"] is None or not torch.cuda.is_available():
        result["built"] = False
        result["why_not_built"] = (
            "no TensorRT Python module" if result["probe"]["tensorrt"] is None else "no GPU"
        )
        return result
    from radserve.export.checkpoint import load_checkpoint
    from radserve.export.parity import compare, torch_probabilities
    from radserve.export.tensorrt_plan import (
        EngineSpec,
        Profile,
        build_engine,
        check_plan,
        engine_probabilities,
    )
    from radserve.export.train import synthetic_wire_images
    from radserve.loadtests.gpu_check import save_partial

    size = paths.input_size
    loaded = load_checkpoint(paths.checkpoint, "demo")
    images, _ = synthetic_wire_images(PARITY_IMAGES, loaded.card, (512, 416), seed=7)
    reference = torch_probabilities(loaded.model, loaded.card, images)
    result["plans"] = {}
    for precision, onnx_path in _onnx_variants(paths).items():
        plan = onnx_path.with_suffix(".plan")
        started = time.monotonic()
        entry: dict[str, Any] = {}
        try:
            spec = EngineSpec(onnx_path, plan, Profile(1, 32, max(BATCHES), size, size), precision=precision)
            built = build_engine(spec)
            entry["build_seconds"] = round(time.monotonic() - started, 1)
            entry["metadata"] = check_plan(plan).to_dict() | {"built_tensorrt": built.tensorrt_version}
            entry["parity"] = compare(
                reference, engine_probabilities(plan, images), "pytorch fp32 cpu"
            ).to_dict()
            entry["img_per_s"] = _raw_rates(plan, size, BATCHES, 0.3 if paths.dry_run else 1.5)
        except Exception as error:  # one precision failing is a figure; the other still runs
            entry["error"] = f"{type(error).__name__}: {error}"
        LOGGER.info("tensorrt %s: %s", precision, entry)
        result["plans"][precision] = entry
        save_partial(paths, "tensorrt", result)
    result["built"] = any("img_per_s" in entry for entry in result["plans"].values())
    return result
