"""The benchmark, systems and tuning tables, generated from ``bench.json`` / ``tune.json`` files.

    python -m radserve.loadtests.tables --bench docs/bench/*.json --tune docs/bench/tune-*.json

Prints the tables. The documentation site's measurement pages call these functions at build time
(tools/docs_hooks.py), so no table is ever copied by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radserve.loadtests.points import config_label


def _figure(point: dict[str, Any]) -> str:
    low, high = point["images_per_second_range"]
    return f"{point['images_per_second']:.1f} ({low:.1f}-{high:.1f})"


def _best(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda point: point["images_per_second"])


def bench_row(result: dict[str, Any]) -> str:
    """One model's row: median (range) of each path at its best, and the ratios."""
    raw, served = _best(result["raw"]), _best(result["served"])
    ratios = result["ratios"]
    cells = [
        f"{result['architecture']} {result['precision']} @ {result['input_size'][0]}",
        f"{_figure(raw)} ({raw['layout']}, b{raw['batch']})",
        f"{_figure(served)} (c{config_label(served['concurrency'], served['batch'])})",
        f"{ratios['served_over_raw']:.2f}" + (" (see its warning)" if result.get("warnings") else ""),
    ]
    if result["naive"]:
        naive = _best(result["naive"])
        engine = result["naive_engine"].split("PyTorch eager ", 1)[1].strip()  # "fp32", "fp32 (...)"
        engine = engine.split(" (")[0] + (", no CPU int8" if "int8" in engine else "")
        per_concurrency = " / ".join(f"{v:.1f}" for v in ratios["served_over_naive_per_concurrency"].values())
        cells += [
            f"{_figure(naive)} (c{config_label(naive['concurrency'], naive['batch'])}, eager {engine})",
            f"{ratios['served_over_naive_at_best']:.2f}",
            per_concurrency,
        ]
    else:
        cells += ["-", "-", "-"]
    end_to_end = result["end_to_end"]
    cells.append(_figure(end_to_end) if end_to_end else "-")
    return "| " + " | ".join(cells) + " |"


def bench_table(results: Sequence[dict[str, Any]]) -> str:
    concurrencies = (
        "/".join(config_label(p["concurrency"], p["batch"]) for p in results[0]["served"]) if results else ""
    )
    header = (
        "| model | raw img/s (layout, batch) | served img/s | served / raw | naive img/s | "
        f"served / naive at best | served / naive at c = {concurrencies} | end-to-end radiographs/s |"
    )
    return "\n".join([header, "|---" * 8 + "|", *(bench_row(result) for result in results)])


def systems_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per served system (``radserve bench --system``): raw and served at each's best."""
    lines = [
        "| system | network @ study input | raw img/s (layout, batch) | served img/s | served / raw | "
        "end-to-end radiographs/s |",
        "|---" * 6 + "|",
    ]
    for result in results:
        raw, served = _best(result["raw"]), _best(result["served"])
        end_to_end = result["end_to_end"]
        cells = [
            result["model"],
            f"{result['architecture']} @ {result['input_size'][0]}",
            f"{_figure(raw)} ({raw['layout']}, b{raw['batch']})",
            f"{_figure(served)} (c{config_label(served['concurrency'], served['batch'])})",
            f"{result['ratios']['served_over_raw']:.2f}",
            _figure(end_to_end) if end_to_end else "- (study tensors)",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tune_table(result: dict[str, Any]) -> str:
    best = result["best"]
    lines = [
        f"| candidate ({result['architecture']} {result['precision']} @ {result['input_size'][0]}, "
        f"{result['concurrency']} in flight) | img/s median (range) | p95 ms | mean batch | chosen |",
        "|---|---|---|---|---|",
    ]
    for candidate in result["candidates"]:
        point = candidate["point"]
        settings = {key: candidate[key] for key in ("instances", "threads", "queue_delay_us", "preferred")}
        lines.append(
            f"| {candidate['instances']} x {candidate['threads']} ORT threads, delay "
            f"{candidate['queue_delay_us']} µs | {_figure(point)} | {point['p95_ms']:.0f} | "
            f"{point['extra'].get('average_batch_size', 0):.1f} | {'**yes**' if settings == best else ''} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, nargs="*", default=[], help="bench.json files, in row order")
    parser.add_argument("--tune", type=Path, help="a tune.json file")
    parser.add_argument(
        "--systems", type=Path, nargs="*", default=[], help="bench.json files of --system runs"
    )
    args = parser.parse_args(argv)
    blocks = {}
    if args.bench:
        blocks["bench-table"] = bench_table([json.loads(path.read_text()) for path in args.bench])
    if args.systems:
        blocks["systems-table"] = systems_table([json.loads(path.read_text()) for path in args.systems])
    if args.tune:
        blocks["tune-table"] = tune_table(json.loads(args.tune.read_text()))
    for name, block in blocks.items():
        print(f"{name}:\n{block}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
