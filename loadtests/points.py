"""Measured points of the benchmarks: each configuration measured several times, reported by its median.

Every path (raw engine, served, naive, end-to-end) is measured the same way: a warm-up of
:func:`warm_up_seconds` at the point's own load, then ``seconds`` of measurement; the repetitions of
all points are interleaved (round 1 of every point, then round 2, ...) so that a change of load on
the machine spreads over the points instead of landing on one of them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

REPEATS = 3
Config = TypeVar("Config")


def warm_up_seconds(seconds: float) -> float:
    """The warm-up every path gets before each measurement: fills batchers, pools and caches."""
    return min(1.0, seconds / 3)


@dataclass
class Run:
    """One measurement of one configuration."""

    images: int
    seconds: float
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"images_per_second": round(self.images_per_second, 2)}


def timed_run(latencies: Sequence[float], images: int, seconds: float) -> Run:
    """A :class:`Run` from per-request latencies (seconds)."""
    percentiles = np.percentile(latencies, [50, 95, 99]) * 1000 if len(latencies) else np.zeros(3)
    p50, p95, p99 = (round(float(value), 2) for value in percentiles)
    return Run(images, seconds, p50, p95, p99)


@dataclass
class Point:
    """One configuration of one path and its repeated runs; figures are medians over the runs."""

    path: str  # raw | served | naive | end_to_end
    concurrency: int
    batch: int
    runs: list[Run]
    layout: str = ""  # raw: "PROCESSES x THREADS"
    extra: dict[str, Any] = field(default_factory=dict)

    def _median(self, value: Callable[[Run], float]) -> float:
        return float(statistics.median(value(run) for run in self.runs)) if self.runs else 0.0

    @property
    def images_per_second(self) -> float:
        return self._median(lambda run: run.images_per_second)

    @property
    def spread(self) -> tuple[float, float]:
        """(lowest, highest) img/s of the runs."""
        rates = [run.images_per_second for run in self.runs] or [0.0]
        return min(rates), max(rates)

    @property
    def p50_ms(self) -> float:
        return self._median(lambda run: run.p50_ms)

    @property
    def p95_ms(self) -> float:
        return self._median(lambda run: run.p95_ms)

    @property
    def p99_ms(self) -> float:
        return self._median(lambda run: run.p99_ms)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.spread
        return {
            "path": self.path,
            "layout": self.layout,
            "concurrency": self.concurrency,
            "batch": self.batch,
            "images_per_second": round(self.images_per_second, 2),
            "images_per_second_range": [round(low, 2), round(high, 2)],
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "runs": [run.to_dict() for run in self.runs],
            "extra": self.extra,
        }


def packed(images: Sequence[np.ndarray], per_request: int) -> list[np.ndarray]:
    """``images`` (``[1, C, H, W]`` each) as requests of ``per_request`` radiographs, cycling through them."""
    if per_request == 1:
        return list(images)
    count = len(images)
    return [
        np.concatenate([images[(start + index) % count] for index in range(per_request)])
        for start in range(0, count, per_request)
    ]


def config_label(concurrency: int, per_request: int) -> str:
    """How a (requests in flight, radiographs per request) configuration is named in ratios and tables."""
    return str(concurrency) if per_request == 1 else f"{concurrency}x{per_request}"


def interleaved(configs: Sequence[Config], measure: Callable[[Config], Run], repeats: int) -> list[list[Run]]:
    """``repeats`` runs of every config, round by round; the runs of each config, in config order."""
    runs: list[list[Run]] = [[] for _ in configs]
    for _ in range(repeats):
        for index, config in enumerate(configs):
            runs[index].append(measure(config))
    return runs


def best(points: Sequence[Point]) -> Point:
    """The point with the highest median throughput."""
    return max(points, key=lambda point: point.images_per_second)
