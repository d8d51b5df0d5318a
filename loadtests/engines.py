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
from radserve.loadtests.raw import ENGINES, batch_feeds, cpu_session, measure_raw
from radserve.model_card import INPUT_NAME, OUTPUT_NAME
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)


def probabilities(onnx_path: Path, engine: str, images: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    """``[N, classes]`` of ``engine`` on ``images`` (``uint8 [1, C, H, W]`` each), one thread."""
    session = cpu_session(onnx_path, 1, engine)
    feeds = batch_feeds(images, batch)[: -(-len(images) // batch)]
    rows = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: feed})[0] for feed in feeds])
    return rows[: len(images)]


def gate(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Top-1 agreement and max abs difference against the reference, and whether the gate passes."""
    top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    max_abs = float(np.abs(reference - candidate).max())
    passed = top1 >= SETTINGS.export.reduced_min_top1 and max_abs <= SETTINGS.export.reduced_max_abs_diff
    return {"top1_agreement": round(top1, 4), "max_abs_diff": max_abs, "passes_gate": passed}


def compare_engines(
    variants: dict[str, Path],
    images: Sequence[np.ndarray],
    seconds: float,
    batches: Sequence[int],
    repeats: int,
    engines: Sequence[str] = ENGINES,
) -> dict[str, Any]:
    """Each engine on each variant (``{"fp32": model.onnx, "int8": ...}``): its raw points, best
    img/s, ratio to ONNX Runtime fp32 and gate against ONNX Runtime fp32."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}: choose from {list(ENGINES)}")
    reference = probabilities(variants["fp32"], "onnxruntime", images)
    results: dict[str, Any] = {}
    for precision, onnx_path in variants.items():
        for engine in engines:
            if precision == "int8" and engine == "openvino-bf16":
                continue  # an int8 graph's bf16 hint changes only its few float layers: same as openvino
            label = f"{engine} {precision}"
            try:
                parity = gate(reference, probabilities(onnx_path, engine, images))
                points = measure_raw(onnx_path, images, seconds, batches, repeats=repeats, engine=engine)
            except Exception as error:  # an engine that cannot run a model is a finding, not a crash
                results[label] = {"error": f"{type(error).__name__}: {error}"}
                continue
            top = best(points)
            results[label] = {
                "engine": engine,
                "precision": precision,
                "best_img_per_s": round(top.images_per_second, 1),
                "best_at": f"{top.layout}, batch {top.batch}",
                "parity_vs_onnxruntime_fp32": parity,
                "points": [point.to_dict() for point in points],
            }
            LOGGER.info(
                "%s: %.1f img/s at %s, %s", label, top.images_per_second, results[label]["best_at"], parity
            )
    baseline = results.get("onnxruntime fp32", {}).get("best_img_per_s")
    for entry in results.values():
        if baseline and "best_img_per_s" in entry:
            entry["over_onnxruntime_fp32"] = round(entry["best_img_per_s"] / baseline, 3)
    return results


def engines_table(data: dict[str, Any]) -> str:
    """Markdown of an ``engines.json``: one row per engine and precision."""
    lines = [
        f"{data['architecture']} @ {data['input_size'][0]}, {data['cpu_count']} cores, median of "
        f"{data['repeats']} runs of {data['seconds']:g} s per point; gate: the fp16/int8 defaults.",
        "",
        "| engine | precision | best img/s | at | / ONNX Runtime fp32 | top-1 vs fp32 | max abs diff "
        "| gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in data["engines"].items():
        if "error" in entry:
            lines.append(f"| {label} | | | | | | | {entry['error'][:80]} |")
            continue
        parity = entry["parity_vs_onnxruntime_fp32"]
        lines.append(
            f"| {entry['engine']} | {entry['precision']} | {entry['best_img_per_s']} | {entry['best_at']} | "
            f"{entry.get('over_onnxruntime_fp32', '')} | {parity['top1_agreement']:.1%} | "
            f"{parity['max_abs_diff']:.1e} | {'pass' if parity['passes_gate'] else 'FAIL'} |"
        )
    return "\n".join(lines)
