"""``radserve tune``'s choice of CPU engine for the embedded target.

The engines that can serve the model's precision (:data:`CHOOSABLE`) run its ``model.onnx`` raw
(:func:`~radserve.loadtests.engines.compare_engines`: every layout, interleaved), each gated against
the engine the card serves with on the same wire images, with export's gate for the precision; that
engine was gated against PyTorch at export, so the sum of the two max abs differences (the bound
against PyTorch) must pass the gate too. Another engine is chosen when it is at least
``SETTINGS.export.cpu_engine_min_gain`` faster (:func:`choose_engine`); ``--apply`` publishes the
model's newest version again as the next version running it, the choice recorded in the card
(:class:`~radserve.card_records.CpuEngineChoice`).
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radserve.card_records import CpuEngineChoice
from radserve.loadtests.engines import compare_engines, probabilities
from radserve.model_card import ModelCard
from radserve.settings import SETTINGS

# the raw engines (radserve.loadtests.raw.ENGINES) that can serve a precision's ONNX on the embedded
# target; bf16 runs on OpenVINO only and fp16 on ONNX Runtime only, so neither has a choice
CHOOSABLE: dict[str, tuple[str, ...]] = {
    "fp32": ("onnxruntime", "openvino"),
    "int8": ("onnxruntime", "openvino"),
}


@dataclass(frozen=True)
class EngineMeasurement:
    """One engine's raw figure on the model and its gate against the card's engine."""

    engine: str
    images_per_second: float
    passes_gate: bool
    parity: dict[str, Any]


def choose_engine(
    current: str, measured: Sequence[EngineMeasurement], min_gain: float = SETTINGS.export.cpu_engine_min_gain
) -> EngineMeasurement | None:
    """The fastest engine that passes the gate and is at least ``min_gain`` faster than ``current``.

    Args:
        current: The engine the card serves with.
        measured: Every engine's measurement, ``current``'s among them.
        min_gain: The fraction another engine must be faster by.

    Returns:
        The engine to switch to; None to keep ``current`` (no faster one, or ``current`` not measured).
    """
    baseline = next((m for m in measured if m.engine == current), None)
    if baseline is None or baseline.images_per_second <= 0:
        return None
    faster = [
        m
        for m in measured
        if m.engine != current
        and m.passes_gate
        and m.images_per_second >= (1 + min_gain) * baseline.images_per_second
    ]
    return max(faster, key=lambda m: m.images_per_second, default=None)


def measure_engines(
    card: ModelCard, onnx_path: Path, images: Sequence[np.ndarray], seconds: float, repeats: int
) -> list[EngineMeasurement]:
    """Each engine of :data:`CHOOSABLE` for the card's precision on ``onnx_path``; empty: no choice."""
    engines = CHOOSABLE.get(card.precision, ())
    if card.cpu_engine not in engines:
        return []
    served = probabilities(onnx_path, card.cpu_engine, images)
    reference = f"{card.cpu_engine} {card.precision} (served)"
    results = compare_engines(
        {card.precision: onnx_path}, images, seconds, (1, 8), repeats, engines, (reference, served)
    )
    served_report = card.parity.runtimes.get(f"{card.cpu_engine}_{card.precision}")
    recorded = served_report.max_abs_diff if served_report else 0.0
    allowed = (
        SETTINGS.export.fp32_max_abs_diff
        if card.precision == "fp32"
        else SETTINGS.export.reduced_max_abs_diff
    )
    measured = []
    for engine in engines:
        entry = results[f"{engine} {card.precision}"]
        if "error" in entry:
            continue
        parity = entry["parity"] | {
            "max_abs_diff_bound_vs_pytorch": recorded + entry["parity"]["max_abs_diff"]
        }
        passes = parity["passes_gate"] and parity["max_abs_diff_bound_vs_pytorch"] <= allowed
        measured.append(EngineMeasurement(engine, entry["best_img_per_s"], passes, parity))
    return measured


def choice_record(
    current: str, choice: EngineMeasurement, measured: Sequence[EngineMeasurement]
) -> CpuEngineChoice:
    """The card's record of switching from ``current`` to ``choice``."""
    rates = {m.engine: m.images_per_second for m in measured}
    return CpuEngineChoice(
        engine=choice.engine,
        replaced=current,
        ratio=round(choice.images_per_second / rates[current], 3),
        images_per_second=rates,
        gate=choice.parity,
        host=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        measured=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def apply_choice(repository: Path, card: ModelCard, record: CpuEngineChoice) -> Path:
    """Publish the model's newest version again as its next version, served by ``record.engine``
    (its agreement with the replaced engine is the record's ``gate``; the parity reports stay as
    export measured them)."""
    from radserve.export.repository import republish

    return republish(repository, card.replace(cpu_engine=record.engine, cpu_engine_choice=record))
