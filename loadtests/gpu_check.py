"""The offline GPU check (``build/gpu-bundle/check.sh``): independent, time-boxed stages, one report.

Each stage runs in its own process (``--stage NAME``) under a timeout taken from the remaining
budget; a stage that fails or times out writes its error into the report and the next one runs.
After every stage ``gpu-check.json`` and ``gpu-check.md`` are rewritten in the output folder, so a
check cut short still leaves what it measured. ``--cpu-dry-run`` runs the same stages on the CPU with
a small model and short sweeps (the script logic, not the figures).

Stages: ``environment``; ``model`` (demo ResNet-18 @ 224: seeded random init with a linear head
fitted on synthetic radiographs, exported to ``embedded-gpu`` fp16 behind the parity gate);
``raw`` (the backend's own module in-process: PyTorch fp16 + CUDA graphs); ``served``
(tritonserver on the GPU, parity vs the CPU reference, gRPC load sweep: loadtests/gpu_served.py);
``end_to_end`` (compressed DICOM files to rows with ``--decode gpu`` and with the CPU decoders:
loadtests/gpu_end_to_end.py); ``decode`` (nvImageCodec vs the stored pixels:
loadtests/gpu_decode_check.py); ``systems`` (the five systems' networks raw and served:
loadtests/gpu_systems.py); ``tensorrt`` (the probe, and plans where the host has TensorRT:
loadtests/gpu_tensorrt.py); ``cpu_target`` (the embedded CPU target on the host's cores:
loadtests/gpu_cpu_target.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("gpu-check")

MODEL = "demo"
RAW_BATCHES = (1, 8, 32, 128, 256)
# (stage, seconds at most); the budget left bounds each too
STAGES: tuple[tuple[str, int], ...] = (
    ("environment", 30),
    ("model", 120),
    ("raw", 60),
    ("served", 150),
    ("end_to_end", 150),
    ("decode", 60),
    ("systems", 180),
    ("tensorrt", 120),
    ("cpu_target", 90),
)
BUDGET_SECONDS = 465.0  # all stages together; check.sh allows 480 (8 minutes) in all


@dataclass(frozen=True)
class Paths:
    work: Path
    out: Path
    dicom: Path
    dry_run: bool

    @property
    def repository(self) -> Path:
        return self.work / "repository"

    @property
    def checkpoint(self) -> Path:
        return self.work / "demo-resnet18.pt"

    def result(self, stage: str) -> Path:
        return self.work / f"stage-{stage}.json"

    @property
    def served_repository(self) -> Path:
        """The repository served: on a dry run, the CPU twin's (Triton refuses KIND_GPU without a GPU)."""
        return self.work / "repository-cpu" if self.dry_run else self.repository

    @property
    def input_size(self) -> int:
        return 32 if self.dry_run else 224

    @property
    def max_batch_size(self) -> int:
        return 8 if self.dry_run else 256

    @property
    def served_model(self) -> str:
        """The GPU model, or on a dry run its CPU twin (Triton refuses KIND_GPU without a GPU)."""
        return f"{MODEL}_cpu" if self.dry_run else f"{MODEL}_fp16"


def stage_environment(paths: Paths) -> dict[str, Any]:
    import numpy
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
    }
    from importlib import metadata

    for package in ("torchvision", "onnxruntime", "grpcio", "protobuf", "tritonclient", "pydicom", "onnx"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # a package missing is a figure too
            info[package] = "missing"
    import cv2

    info["opencv"] = cv2.__version__
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = properties.name
        info["gpu_memory_gib"] = round(properties.total_memory / 2**30, 1)
        info["compute_capability"] = f"{properties.major}.{properties.minor}"
        info["cuda_runtime"] = torch.version.cuda
    smi = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        if _has("nvidia-smi")
        else None
    )
    info["nvidia_smi"] = smi.stdout.strip() if smi else "not found"
    return info


def _has(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def build_demo_checkpoint(paths: Paths) -> dict[str, Any]:
    """ResNet-18, seeded random init; its head is a softmax regression fitted on the frozen features of
    synthetic radiographs (seconds of work, and confident, well separated predictions)."""
    import torch

    from radserve.export.architectures import build_model
    from radserve.export.checkpoint import save_checkpoint
    from radserve.export.serving_graph import ServingGraph
    from radserve.export.train import synthetic_wire_images
    from radserve.model_card import ModelCard
    from radserve.synthetic.dataset import REGIONS

    size = paths.input_size
    card = ModelCard(
        name=MODEL, architecture="resnet18", labels=REGIONS, input_size=(size, size), resize="letterbox"
    )
    torch.manual_seed(0)
    model = build_model("resnet18", len(REGIONS))
    count = 40 if paths.dry_run else 600  # 200 left one held-out near-tie in 64 (H200 run, 2026-11)
    images, labels = synthetic_wire_images(count, card, (512, 416), seed=0)
    head, model.fc = model.fc, torch.nn.Identity()
    graph = ServingGraph(model, card).eval()  # its normalisation; the head is fitted below
    with torch.inference_mode():
        pixels = torch.from_numpy(images).float().expand(-1, 3, -1, -1)
        features = model((pixels - graph.mean) * graph.scale)
    scale = float(features.std()) or 1.0
    features, targets = features.clone() / scale, torch.from_numpy(labels).long()
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), targets)
        loss.backward()
        optimizer.step()
    model.fc = head
    with torch.no_grad():
        accuracy = float((head(features).argmax(1) == targets).float().mean())
        head.weight /= scale
    save_checkpoint(paths.checkpoint, model, card)
    return {"probe_images": count, "probe_train_accuracy": accuracy, "probe_loss": round(loss.item(), 4)}


def stage_model(paths: Paths) -> dict[str, Any]:
    from dataclasses import replace

    from radserve.export.gpu_export import gpu_serving_options
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.export.repo_check import check_repository

    started = time.monotonic()
    result: dict[str, Any] = {"demo": build_demo_checkpoint(paths)}
    result["checkpoint_seconds"] = round(time.monotonic() - started, 1)
    options = gpu_serving_options()
    options = replace(options, batching=replace(options.batching, max_batch_size=paths.max_batch_size))
    samples = 8 if paths.dry_run else 32
    request = ExportRequest(
        paths.checkpoint,
        MODEL,
        paths.repository,
        target="embedded-gpu",
        samples=samples,
        options=options,
        precisions=("fp16",),
    )
    exported = export_checkpoint(request).variants[0]
    result["export_parity"] = exported.card.parity.to_dict()
    result["export_seconds"] = round(time.monotonic() - started - result["checkpoint_seconds"], 1)
    if paths.dry_run:  # the CPU twin the served stage measures on a dry run
        cpu = ExportRequest(paths.checkpoint, f"{MODEL}_cpu", paths.served_repository, samples=samples)
        export_checkpoint(cpu)
    report = check_repository(paths.repository)
    result["repo_check"] = report.render().splitlines()
    if not report.ok:
        raise RuntimeError("radserve repo check refused the exported repository:\n" + report.render())
    return result


def version_folder(paths: Paths, model: str) -> Path:
    from radserve.model_card import model_versions

    return paths.repository / model / str(model_versions(paths.repository / model)[-1])


def stage_raw(paths: Paths) -> dict[str, Any]:
    import numpy as np
    import torch

    from radserve.export.gpu_model import load_runner
    from radserve.export.model_config import padded_batch_sizes

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.monotonic()
    sizes = padded_batch_sizes(paths.max_batch_size)
    runner = load_runner(str(version_folder(paths, f"{MODEL}_fp16")), sizes, device)
    result: dict[str, Any] = {"device": device.type, "capture_seconds": round(time.monotonic() - started, 2)}
    rng = np.random.default_rng(0)
    seconds = 0.3 if paths.dry_run else 1.5
    rates = {}
    for batch in (1, 8) if paths.dry_run else RAW_BATCHES:
        images = rng.integers(0, 256, (batch, 1, paths.input_size, paths.input_size), dtype=np.uint8)
        for _ in range(3):
            runner.infer([images])
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds or count < 3:
            runner.infer([images])
            count += 1
        rates[str(batch)] = round(batch * count / (time.perf_counter() - begin), 1)
        LOGGER.info("raw batch %d: %.0f img/s", batch, rates[str(batch)])
    result["img_per_s"] = rates
    return result


def run_stage(name: str, paths: Paths) -> dict[str, Any]:
    """One stage's figures; each stage beyond the first three lives in its own module."""
    modules = {
        "served": "gpu_served",
        "end_to_end": "gpu_end_to_end",
        "decode": "gpu_decode_check",
        "systems": "gpu_systems",
        "tensorrt": "gpu_tensorrt",
        "cpu_target": "gpu_cpu_target",
    }
    if name in modules:
        import importlib

        module = importlib.import_module(f"radserve.loadtests.{modules[name]}")
        return getattr(module, f"stage_{name}")(paths)
    return {"environment": stage_environment, "model": stage_model, "raw": stage_raw}[name](paths)


def save_partial(paths: Paths, stage: str, result: dict[str, Any]) -> None:
    """What ``stage`` measured so far, kept in the report if the stage is cut short or crashes."""
    partial = {"ok": False, "error": f"stage {stage} did not finish (partial figures)", **result}
    paths.result(stage).write_text(json.dumps(partial, indent=2, default=str))


def _child(name: str, paths: Paths) -> int:
    started = time.monotonic()
    try:
        result = {"ok": True, **run_stage(name, paths)}
    except Exception as error:
        LOGGER.error("stage %s failed: %s", name, error)
        lines = traceback.format_exc().strip().splitlines()
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback_tail": lines[-6:]}
    result["seconds"] = round(time.monotonic() - started, 1)
    paths.result(name).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["ok"] else 1


def _kill_leftover_server(paths: Paths) -> None:
    pid_file = paths.work / "tritonserver.pid"
    if pid_file.is_file():
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        pid_file.unlink()


def orchestrate(paths: Paths, budget: float, only: list[str] | None) -> dict[str, Any]:
    from radserve.loadtests.gpu_report import write_report

    deadline = time.monotonic() + budget
    report: dict[str, Any] = {"dry_run": paths.dry_run, "budget_seconds": budget, "stages": {}}
    for name, limit in STAGES:
        if only and name not in only:
            continue
        timeout = min(limit, deadline - time.monotonic() - 5)
        if timeout < 10:
            report["stages"][name] = {"ok": False, "error": "skipped: the check's time budget is spent"}
            continue
        LOGGER.info("stage %s (at most %.0f s)", name, timeout)
        command = [sys.executable, "-m", "radserve.loadtests.gpu_check", "--stage", name]
        command += ["--work", str(paths.work), "--out", str(paths.out), "--dicom", str(paths.dicom)]
        command += ["--cpu-dry-run"] if paths.dry_run else []
        started = time.monotonic()
        process = subprocess.Popen(command, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _kill_leftover_server(paths)
        cause = f"timed out after {timeout:.0f} s" if process.returncode == -9 else "wrote no result"
        try:
            result = json.loads(paths.result(name).read_text())
        except (OSError, json.JSONDecodeError):
            result = {"ok": False, "error": f"stage {name} {cause} (exit code {process.returncode})"}
        if not result["ok"] and process.returncode not in (0, 1):
            result["error"] = f"{result['error']}; {cause} (exit code {process.returncode})"
        result["wall_seconds"] = round(time.monotonic() - started, 1)
        report["stages"][name] = result
        LOGGER.info(
            "stage %s: %s in %.1f s", name, "ok" if result["ok"] else result["error"], result["wall_seconds"]
        )
        write_report(report, paths.out)
    report["total_seconds"] = round(budget - (deadline - time.monotonic()), 1)
    write_report(report, paths.out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="radserve's offline GPU check")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (repository, stage results)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT_DIR", "gpu-check-out")))
    parser.add_argument("--dicom", type=Path, required=True, help="the bundle's DICOM files")
    parser.add_argument("--cpu-dry-run", action="store_true", help="run the stages on the CPU, small")
    parser.add_argument("--budget-seconds", type=float, default=BUDGET_SECONDS, help="all stages together")
    parser.add_argument("--stage", help="run one stage in this process (used by the orchestrator)")
    parser.add_argument("--only", nargs="+", help="run only these stages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = Paths(args.work.resolve(), args.out.resolve(), args.dicom.resolve(), args.cpu_dry_run)
    if args.stage:
        return _child(args.stage, paths)
    report = orchestrate(paths, args.budget_seconds, args.only)
    failed = [name for name, stage in report["stages"].items() if not stage["ok"]]
    print(f"gpu check finished in {report['total_seconds']} s; failed stages: {failed or 'none'}")
    print(f"report: {paths.out / 'gpu-check.json'} and {paths.out / 'gpu-check.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
