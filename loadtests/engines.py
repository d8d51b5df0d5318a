"""``radserve bench --engines``: which CPU engine runs a served model fastest here, at which precision.

For one model file (and its INT8 variant, when the repository has one), each engine of
:data:`~radserve.loadtests.raw.ENGINES` — ONNX Runtime, OpenVINO at f32, OpenVINO at bf16 (where
the CPU has bf16: AVX512-BF16 or AMX) — is measured raw in every layout and batch of
:mod:`.raw`, interleaved, and checked against ONNX Runtime fp32 on the same wire images with the
reduced-precision gate of export (top-1 agreement and max abs probability difference, the fp16/int8
defaults of ``radserve.settings``). The reference is the fp32 ONNX, which export already gated
against PyTorch (max abs diff ~1e-7), so the gate holds against PyTorch to within that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radserve.loadtests.points import best
from radserve.loadtests.raw import ENGINES, batch_feeds, cpu_session, measure_engines
from radserve.model_card import INPUT_NAME, OUTPUT_NAME
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)


def probabilities(onnx_path: Path, engine: str, images: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    """``[N, classes]`` of ``engine`` on ``images`` (``uint8 [1, C, H, W]`` each), one thread."""
    session = cpu_session(onnx_path, 1, engine)
    feeds = batch_feeds(images, batch)[: -(-len(images) // batch)]
    rows = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: feed})[0] for feed in feeds])
    return rows[: len(images)]


def gate(reference: np.ndarray, candidate: np.ndarray, precision: str = "int8") -> dict[str, Any]:
    """Top-1 agreement and max abs difference against the reference, and whether export's gate for
    ``precision`` passes (fp32: the fp32 gate; every other precision: the fp16/int8 gate)."""
    top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    max_abs = float(np.abs(reference - candidate).max())
    export = SETTINGS.export
    if precision == "fp32":
        min_top1, max_abs_allowed = export.fp32_min_top1, export.fp32_max_abs_diff
    else:
        min_top1, max_abs_allowed = export.reduced_min_top1, export.reduced_max_abs_diff
    passed = top1 >= min_top1 and max_abs <= max_abs_allowed
    return {"top1_agreement": round(top1, 4), "max_abs_diff": max_abs, "passes_gate": passed}


def engine_precision(engine: str, variant: str) -> str:
    """The precision ``engine`` computes a ``variant`` file at: OpenVINO's bf16 hint makes fp32 bf16."""
    return "bf16" if engine == "openvino-bf16" and variant == "fp32" else variant


def compare_engines(
    variants: dict[str, Path],
    images: Sequence[np.ndarray],
    seconds: float,
    batches: Sequence[int],
    repeats: int,
    engines: Sequence[str] = ENGINES,
    reference: tuple[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Each engine on each variant (``{"fp32": model.onnx, "int8": ...}``): its raw points, best
    img/s, ratio to ONNX Runtime fp32 and gate against ``reference`` (name, probabilities on
    ``images``; default ONNX Runtime fp32). Every pair's runs are interleaved with the others'."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}: choose from {list(ENGINES)}")
    name, expected = reference or ("onnxruntime fp32", probabilities(variants["fp32"], "onnxruntime", images))
    results: dict[str, Any] = {}
    measured: list[tuple[str, Path, str]] = []
    for variant, onnx_path in variants.items():
        for engine in engines:
            if variant == "int8" and engine == "openvino-bf16":
                continue  # an int8 graph's bf16 hint changes only its few float layers: same as openvino
            label, precision = f"{engine} {variant}", engine_precision(engine, variant)
            try:
                parity = gate(expected, probabilities(onnx_path, engine, images), precision)
            except Exception as error:  # an engine that cannot run a model is a finding, not a crash
                results[label] = {
                    "engine": engine,
                    "precision": precision,
                    "error": f"{type(error).__name__}: {error}",
                }
                continue
            results[label] = {
                "engine": engine,
                "precision": precision,
                "parity": {"reference": name, **parity},
            }
            measured.append((label, onnx_path, engine))
    points = measure_engines(
        [(path, engine) for _, path, engine in measured], images, seconds, batches, None, repeats
    )
    for (label, _, _), engine_points in zip(measured, points, strict=True):
        top = best(engine_points)
        low, high = top.spread
        results[label] |= {
            "best_img_per_s": round(top.images_per_second, 1),
            "best_img_per_s_range": [round(low, 1), round(high, 1)],
            "best_at": f"{top.layout}, batch {top.batch}",
            "points": [point.to_dict() for point in engine_points],
        }
        LOGGER.info("%s: %.1f img/s at %s, %s", label, top.images_per_second, results[label]["best_at"],
                    results[label]["parity"])  # fmt: skip
    baseline = results.get("onnxruntime fp32", {}).get("best_img_per_s")
    for entry in results.values():
        if baseline and "best_img_per_s" in entry:
            entry["over_onnxruntime_fp32"] = round(entry["best_img_per_s"] / baseline, 3)
    return results


def _rate_cell(entry: dict[str, Any]) -> str:
    low, high = entry.get("best_img_per_s_range", [entry["best_img_per_s"]] * 2)
    return f"{entry['best_img_per_s']} ({low}-{high})"


def _gate_cell(parity: dict[str, Any]) -> str:
    verdict = "pass" if parity["passes_gate"] else "FAIL"
    return f"{parity['top1_agreement']:.1%} / {parity['max_abs_diff']:.1e} {verdict}"


def engines_table(data: dict[str, Any]) -> str:
    """Markdown of an ``engines.json``: one row per engine and precision."""
    lines = [
        f"{data['architecture']} @ {data['input_size'][0]}, {data['cpu_count']} cores, median (range) of "
        f"{data['repeats']} runs of {data['seconds']:g} s per point; gate: export's for each precision.",
        "",
        "| engine | precision | best img/s | at | / ONNX Runtime fp32 | top-1 / max abs diff vs reference "
        "| gate |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, entry in data["engines"].items():
        if "error" in entry:
            lines.append(f"| {label} | | | | | | {entry['error'][:80]} |")
            continue
        parity = entry["parity"]
        lines.append(
            f"| {entry['engine']} | {entry['precision']} | {_rate_cell(entry)} | "
            f"{entry['best_at']} | {entry.get('over_onnxruntime_fp32', '')} | "
            f"{parity['top1_agreement']:.1%} / {parity['max_abs_diff']:.1e} vs {parity['reference']} | "
            f"{'pass' if parity['passes_gate'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def engines_summary(runs: Sequence[dict[str, Any]]) -> str:
    """Markdown of several ``engines.json``: one row per model, one column per engine and precision
    (img/s over ONNX Runtime fp32 of the same run, and the gate against the run's reference), and the
    fastest engine and precision that passes its gate."""
    labels = list(dict.fromkeys(label for data in runs for label in data["engines"]))
    headers = [label.replace("openvino-bf16 fp32", "openvino bf16") for label in labels]
    lines = [
        "| model | onnxruntime fp32 img/s | "
        + " | ".join(headers)
        + " | fastest passing its gate | load average |",
        "|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    for data in runs:
        engines = data["engines"]
        baseline = engines.get("onnxruntime fp32", {})
        cells = [
            f"{data['architecture']} @ {data['input_size'][0]}",
            _rate_cell(baseline) if "best_img_per_s" in baseline else "",
        ]
        for label in labels:
            entry = engines.get(label)
            if entry is None:
                cells.append("")
            elif "error" in entry:
                cells.append(f"error: {entry['error'][:60]}")
            else:
                cells.append(f"{entry.get('over_onnxruntime_fp32', '')}x ({_gate_cell(entry['parity'])})")
        named = dict(zip(labels, headers, strict=True))
        passing = [
            (entry["best_img_per_s"], named[label])
            for label, entry in engines.items()
            if "best_img_per_s" in entry and entry["parity"]["passes_gate"]
        ]
        cells.append(max(passing)[1] if passing else "none")
        cells.append(data.get("load", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
