"""``radserve tune MODEL``: sweep the serving configuration against a p95 latency budget.

Like Triton's model analyzer, on a small scale: each candidate (dynamic batching preferred sizes and
queue delay, CPU instance count, ONNX Runtime threads per instance) is written as a config variant
of the model's newest version into a temporary repository, tritonserver is restarted on it, and the
served path is measured at the client's concurrency, ``--repeats`` times (interleaved runs with the
server up; figures are medians). The best candidate is the highest median throughput whose median
p95 stays within ``--latency-budget-ms``. Bounded by ``--max-seconds``. Every run goes into
``--out`` (JSON), from which the site's tuning table is generated (``loadtests/tables.py``).

Before the sweep, the CPU engines that can serve the model's precision are measured raw
(:mod:`.engine_choice`); one that passes the gate and is faster by ``SETTINGS.export.cpu_engine_min_gain``
is recommended, and with ``--apply`` published as the model's next version (its card records the
ratio), which the sweep then measures. ``--engines-only`` stops after that; ``--no-engines`` skips it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radserve.loadtests.bench import latest_version, measure_served, wire_images
from radserve.loadtests.points import REPEATS, Point
from radserve.model_card import ModelCard
from radserve.settings import SETTINGS, BatchingDefaults

_ENGINE_SECONDS = 2.0  # at most, per raw run of the engine choice


@dataclass(frozen=True)
class Candidate:
    instances: int
    threads: int
    queue_delay_us: int
    preferred: tuple[int, ...]

    def batching(self) -> BatchingDefaults:
        return dataclasses.replace(
            SETTINGS.batching,
            max_queue_delay_microseconds=self.queue_delay_us,
            preferred_batch_sizes=self.preferred,
        )

    def __str__(self) -> str:
        return (
            f"instances {self.instances} x {self.threads} ORT threads, queue delay {self.queue_delay_us} us, "
            f"preferred {list(self.preferred) or '-'}"
        )


def candidates(cpus: int, quick: bool = False) -> list[Candidate]:
    """Instance/thread splits of the cores, times queue delays (preferred sizes matter little on CPU)."""
    splits = [(1, cpus)] + ([(cpus, 1)] if cpus > 1 else [])
    delays = (0, 500) if quick else (0, 500, 2000)
    preferred = (4, 8, 16)
    return [Candidate(i, t, d, preferred) for i, t in splits for d in delays]


def write_variant(repository: Path, model: str, candidate: Candidate, into: Path) -> Path:
    """A one-model repository holding ``model``'s newest version with ``candidate``'s config."""
    from radserve.export.model_config import ServingOptions, build_config, render_config
    from radserve.server_config.serving_view import host_sized_config

    version = latest_version(repository, model)
    card = ModelCard.read(version)
    model_dir = into / model
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    shutil.copytree(version, model_dir / "1")
    for extra in ("labels.txt",):
        if (repository / model / extra).exists():
            shutil.copy(repository / model / extra, model_dir / extra)
    target = "embedded" if (version / "model.py").exists() else "onnxruntime"
    options = ServingOptions(batching=candidate.batching())
    text = render_config(build_config(card, target, options))
    (model_dir / "config.pbtxt").write_text(
        host_sized_config(text, candidate.instances, candidate.threads)[0]
    )
    return into


def tune_engine(args: argparse.Namespace, card: ModelCard, images: list[np.ndarray]) -> dict[str, Any]:
    """Measure the embedded model's CPU engines raw; recommend a faster one, publish it with ``--apply``."""
    from radserve.loadtests import engine_choice

    version = latest_version(args.repository, args.model)
    measured = []
    if (version / "model.py").exists():
        seconds = min(args.seconds, _ENGINE_SECONDS)
        measured = engine_choice.measure_engines(card, version / "model.onnx", images, seconds, args.repeats)
    result: dict[str, Any] = {
        "current": card.cpu_engine,
        "measured": [dataclasses.asdict(m) for m in measured],
    }
    if not measured:
        print(f"engine: {card.cpu_engine}, the only one for this model ({card.precision}, its target)")
        return result
    for m in measured:
        parity, verdict = m.parity, "pass" if m.passes_gate else "FAIL"
        print(
            f"  engine {m.engine:<12} {m.images_per_second:7.1f} img/s raw  gate {verdict} (top-1 "
            f"{parity['top1_agreement']:.1%}, max abs {parity['max_abs_diff']:.1e} vs {parity['reference']})"
        )
    choice = engine_choice.choose_engine(card.cpu_engine, measured)
    if choice is None:
        gain = SETTINGS.export.cpu_engine_min_gain
        print(f"engine: keep {card.cpu_engine} (no other engine passing the gate is {gain:.0%} faster raw)")
        return result
    record = engine_choice.choice_record(card.cpu_engine, choice, measured)
    result["choice"] = dataclasses.asdict(record)
    print(f"engine: {record.engine} is {record.ratio:.2f}x {record.replaced} raw on this host", end="")
    if not args.apply:
        print("; serve it with radserve tune --apply")
        return result
    published = engine_choice.apply_choice(args.repository, card, record)
    result["published"] = str(published)
    print(f"; published as {published} (its card records the choice)")
    return result


def main(args: argparse.Namespace) -> int:
    from radserve.server_config.triton import TritonServer, free_ports

    card = ModelCard.read(latest_version(args.repository, args.model))
    images = wire_images(card, args.dicom)
    engine = None if args.no_engines else tune_engine(args, card, images)
    card = ModelCard.read(latest_version(args.repository, args.model))  # a new version with --apply
    if args.engines_only:
        write_results(args, card, [], None, engine)
        return 0
    started = time.monotonic()
    results: list[tuple[Candidate, Point]] = []
    print(
        f"tuning {args.model} at concurrency {args.concurrency}, p95 budget {args.latency_budget_ms:.0f} ms"
    )
    with tempfile.TemporaryDirectory(prefix="radserve-tune-") as work:
        for candidate in candidates(os.cpu_count() or 1, args.quick):
            if time.monotonic() - started > args.max_seconds:
                print("time budget spent; remaining candidates not measured")
                break
            repository = write_variant(args.repository, args.model, candidate, Path(work))
            with TritonServer(repository, ports=free_ports()) as server:
                (point,) = measure_served(
                    server.grpc_url,
                    args.model,
                    images,
                    ((args.concurrency, 1),),
                    args.seconds,
                    server.metrics_url,
                    args.repeats,
                )
            results.append((candidate, point))
            within = "ok " if point.p95_ms <= args.latency_budget_ms else "over"
            low, high = point.spread
            print(
                f"  {within} {point.images_per_second:7.1f} ({low:.1f}-{high:.1f}) img/s  "
                f"p95 {point.p95_ms:7.1f} ms  "
                f"batch {point.extra.get('average_batch_size', 0):5.2f}  {candidate}",
                flush=True,
            )
    within_budget = [(c, p) for c, p in results if p.p95_ms <= args.latency_budget_ms]
    choice = max(within_budget, key=lambda item: item[1].images_per_second) if within_budget else None
    write_results(args, card, results, choice[0] if choice else None, engine)
    if choice is None:
        print("no configuration meets the latency budget; lower the concurrency or raise the budget")
        return 1
    best, point = choice
    print(f"best: {best}: {point.images_per_second:.1f} img/s, p95 {point.p95_ms:.1f} ms")
    print(
        f"serve with it: RADSERVE_BATCHING_MAX_CPU_INSTANCES={best.instances} (threads: cores / instances); "
        "export with BatchingDefaults("
        f"max_queue_delay_microseconds={best.queue_delay_us}, preferred_batch_sizes={best.preferred})"
    )
    return 0


def write_results(
    args: argparse.Namespace,
    card: ModelCard,
    results: list[tuple[Candidate, Point]],
    best: Candidate | None,
    engine: dict[str, Any] | None,
) -> None:
    """Every candidate's runs and the choice, as JSON (``--out``)."""
    payload = {
        "model": args.model,
        "architecture": card.architecture,
        "input_size": list(card.input_size),
        "precision": card.precision,
        "cpu_count": os.cpu_count() or 1,
        "concurrency": args.concurrency,
        "latency_budget_ms": args.latency_budget_ms,
        "repeats": args.repeats,
        "seconds_per_run": args.seconds,
        "candidates": [dataclasses.asdict(c) | {"point": p.to_dict()} for c, p in results],
        "best": dataclasses.asdict(best) if best else None,
        "engine": engine,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name in the repository")
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--dicom", type=Path, help="DICOM folder for the requests (synthetic if absent)")
    parser.add_argument("--concurrency", type=int, default=SETTINGS.client.max_in_flight)
    parser.add_argument("--latency-budget-ms", type=float, default=500.0, help="p95 the config must meet")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per run")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="runs per candidate (median picks)")
    parser.add_argument("--out", type=Path, default=Path("build/tune/tune.json"), help="JSON of every run")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sweeping after this")
    parser.add_argument("--quick", action="store_true", help="fewer candidates")
    engines = parser.add_mutually_exclusive_group()
    engines.add_argument("--no-engines", action="store_true", help="skip the CPU engine choice")
    engines.add_argument("--engines-only", action="store_true", help="only the CPU engine choice, no sweep")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="publish the model's newest version again as its next version, on the faster CPU engine",
    )
