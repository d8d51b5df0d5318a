"""The embedded-gpu target's dynamic batcher, before and after dropping preferred size 1, on the CPU.

    python -m radserve.loadtests.batching_dry_run --out build/batching-dry-run.json

The embedded-gpu model needs CUDA to load, so this dry run serves the embedded (CPU) model of one
random-weight checkpoint twice in one tritonserver, each copy with the embedded-gpu batcher
(max_batch_size, queue delay) and one of the two preferred-size lists: ``before`` (every padded size,
1 included) and ``after`` (:meth:`EmbeddedGpuTarget.preferred_batch_sizes`). Each is driven by
``--in-flight`` single-radiograph requests, interleaved ``--repeats`` times (loadtests/points.py);
Triton's statistics give each run's batch sizes. The figures are ratios within this one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]


def _serving_copies(source: Path, into: Path) -> dict[str, list[int]]:
    """``before`` and ``after`` copies of model folder ``source`` under ``into``; their preferred sizes."""
    import shutil
    from dataclasses import replace

    from radserve.export.model_config import parse_config, render_config
    from radserve.export.targets import EmbeddedGpuTarget, padded_batch_sizes
    from radserve.settings import SETTINGS

    batching = replace(SETTINGS.batching, max_batch_size=SETTINGS.batching.gpu_max_batch_size)
    lists = {
        "before": list(padded_batch_sizes(batching.max_batch_size)),
        "after": list(EmbeddedGpuTarget().preferred_batch_sizes(batching)),
    }
    for name, preferred in lists.items():
        shutil.copytree(source, into / name)
        config = parse_config((into / name / "config.pbtxt").read_text())
        config.name, config.max_batch_size = name, batching.max_batch_size
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        (into / name / "config.pbtxt").write_text(render_config(config))
    return lists


def _batch_counts(url: str, model: str) -> dict[int, int]:
    """Executions per batch size so far (Triton's model statistics, ``batch_stats``)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(model, as_json=True)
    (model_stats,) = stats["model_stats"]
    return {
        int(entry["batch_size"]): int(entry["compute_infer"].get("count", 0))
        for entry in model_stats.get("batch_stats", [])
    }


def run(architecture: str, in_flight: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Measure both batchers; returns per-model img/s, p50 and batch-size histograms of every run."""
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.loadtests.bench import _served, wire_images
    from radserve.loadtests.points import Run, interleaved
    from radserve.loadtests.random_checkpoint import write_random_checkpoint
    from radserve.model_card import ModelCard
    from radserve.server_config.triton import TritonServer, free_ports

    with tempfile.TemporaryDirectory(prefix="radserve-batching-") as work:
        folder = Path(work)
        checkpoint = write_random_checkpoint(architecture, folder / "model.pt")
        export_checkpoint(ExportRequest(checkpoint, "source", folder / "export", samples=4))
        lists = _serving_copies(folder / "export" / "source", folder / "repository")
        images = wire_images(ModelCard.from_repository(folder / "export", "source"), None)
        with TritonServer(folder / "repository", ports=free_ports()) as server:

            def measure(model: str) -> Run:
                before = _batch_counts(server.grpc_url, model)
                served = asyncio.run(_served(server.grpc_url, model, images, in_flight, seconds))
                after = _batch_counts(server.grpc_url, model)
                batches = {size: count - before.get(size, 0) for size, count in after.items()}
                executions = sum(batches.values())
                mean = (
                    sum(size * count for size, count in batches.items()) / executions if executions else 0.0
                )
                served.extra["batches"] = {str(k): v for k, v in sorted(batches.items()) if v}
                served.extra["mean_batch"] = round(mean, 2)
                return served

            runs = interleaved(list(lists), measure, repeats)
    return {
        "architecture": architecture,
        "in_flight": in_flight,
        "seconds": seconds,
        "preferred": lists,
        "runs": {
            model: [run.to_dict() for run in model_runs]
            for model, model_runs in zip(lists, runs, strict=True)
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="mobilenet_v3_small")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("build/batching-dry-run.json"))
    args = parser.parse_args(argv)
    result = run(args.architecture, args.in_flight, args.seconds, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for model, model_runs in result["runs"].items():
        rates = sorted(entry["images_per_second"] for entry in model_runs)
        batches = [entry["extra"]["mean_batch"] for entry in model_runs]
        print(f"{model}: img/s {rates[len(rates) // 2]:.1f} (runs {rates}), mean batch {batches}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
