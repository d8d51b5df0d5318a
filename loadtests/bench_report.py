"""What ``radserve bench`` reports: ratios, warnings, the table, the plot, and the table rows.

The site's benchmark tables (docs/measurements/bench.md) are generated from ``bench.json`` files
by :mod:`radserve.loadtests.tables` when the site is built, never typed by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radserve.loadtests import cpu_profile
from radserve.loadtests.points import Point, best, config_label

# served/raw above this means the raw line is not the engine's limit (or the machine changed)
SERVED_OVER_RAW_LIMIT = 1.02
# a point whose runs spread more than this (max/min) was measured on a disturbed machine
NOISY_SPREAD = 1.05
# a 1-minute load average above this share of the cores before the run: other processes compete
SHARED_LOAD = 0.5


@dataclass
class BenchResult:
    model: str
    architecture: str
    input_size: tuple[int, int]
    precision: str
    cpu_count: int
    served_layout: str  # instances x ONNX Runtime threads of the served model on this host
    raw: list[Point]
    served: list[Point]
    naive: list[Point]
    naive_precision: str  # PyTorch eager precision of the naive baseline ("" when skipped)
    end_to_end: Point | None
    repeats: int
    seconds: float
    load_before: float = 0.0  # 1-minute load average of the machine before the run started

    @property
    def shared(self) -> bool:
        """Whether other processes were using the cores when the run started."""
        return self.load_before > SHARED_LOAD * self.cpu_count

    @property
    def raw_best(self) -> Point:
        return best(self.raw)

    @property
    def served_best(self) -> Point:
        return best(self.served)

    @property
    def naive_label(self) -> str:
        label = f"ThreadingHTTPServer + PyTorch eager {self.naive_precision}"
        if self.naive_precision and self.naive_precision != self.precision:
            label += f" (PyTorch eager has no CPU {self.precision})"
        return label

    def cpu_profile(self) -> dict[str, Any]:
        """CPU cost per radiograph by process at the best served point, and the served/raw bound."""
        return cpu_profile.profile(self.served_best, self.raw_best, self.cpu_count)

    def ratios(self) -> dict[str, Any]:
        served = self.served_best.images_per_second
        ratios: dict[str, Any] = {"served_over_raw": round(served / self.raw_best.images_per_second, 3)}
        if self.naive:
            ratios["served_over_naive_at_best"] = round(served / best(self.naive).images_per_second, 3)
            naive = {(p.concurrency, p.batch): p.images_per_second for p in self.naive}
            ratios["served_over_naive_per_concurrency"] = {
                config_label(p.concurrency, p.batch): round(
                    p.images_per_second / naive[p.concurrency, p.batch], 3
                )
                for p in self.served
                if naive.get((p.concurrency, p.batch))
            }
        if self.end_to_end is not None:
            ratios["end_to_end_over_served"] = round(self.end_to_end.images_per_second / served, 3)
        return ratios

    def warnings(self) -> list[str]:
        """Why a served/raw above :data:`SERVED_OVER_RAW_LIMIT` cannot be taken at face value."""
        ratio = self.served_best.images_per_second / self.raw_best.images_per_second
        if ratio <= SERVED_OVER_RAW_LIMIT:
            return []
        served_batch = self.served_best.extra.get("average_batch_size", 0.0)
        layouts = {p.layout for p in self.raw}
        noisy = [
            p
            for p in (self.raw_best, self.served_best)
            if p.spread[0] and p.spread[1] / p.spread[0] > NOISY_SPREAD
        ]
        if served_batch > max(p.batch for p in self.raw):
            cause = f"the served batches (mean {served_batch:.1f}) are larger than every raw batch tried"
        elif self.served_layout not in layouts:
            cause = f"the served layout {self.served_layout} was not among the raw layouts {sorted(layouts)}"
        elif self.shared:
            cause = (
                f"the machine is shared (load average {self.load_before:.1f} on {self.cpu_count} cores "
                "before the run): the served path's many busy processes (client, tritonserver, stubs) "
                "take a larger share of the cores than the raw engine's; rerun on a quiet machine"
            )
        elif noisy:
            cause = (
                "the machine's load changed during the run ("
                + ", ".join(f"{p.path} runs {p.spread[0]:.1f}-{p.spread[1]:.1f} img/s" for p in noisy)
                + "): rerun on a quiet machine"
            )
        else:
            cause = (
                "the raw engine ran with other settings than the served model (session options, "
                "model file or input): compare the served config with loadtests/raw.py"
            )
        return [
            f"served/raw is {ratio:.2f} (> {SERVED_OVER_RAW_LIMIT}): the raw line is not the engine's "
            f"limit; likely cause: {cause}"
        ]

    def to_dict(self) -> dict[str, Any]:
        raw_best = self.raw_best
        return {
            "model": self.model,
            "architecture": self.architecture,
            "input_size": list(self.input_size),
            "precision": self.precision,
            "cpu_count": self.cpu_count,
            "repeats": self.repeats,
            "seconds_per_run": self.seconds,
            "load_average_before": round(self.load_before, 2),
            "served_layout": self.served_layout,
            "raw_layouts_tried": sorted({p.layout for p in self.raw}),
            "raw_best": {
                "layout": raw_best.layout,
                "batch": raw_best.batch,
                "images_per_second": round(raw_best.images_per_second, 2),
            },
            "naive_engine": self.naive_label if self.naive else "",
            "raw": [p.to_dict() for p in self.raw],
            "served": [p.to_dict() for p in self.served],
            "naive": [p.to_dict() for p in self.naive],
            "end_to_end": self.end_to_end.to_dict() if self.end_to_end else None,
            "ratios": self.ratios(),
            "cpu_profile": self.cpu_profile(),
            "end_to_end_cpu_profile": cpu_profile.end_to_end_profile(self.end_to_end, self.cpu_count),
            "warnings": self.warnings(),
        }

    def table(self) -> str:
        raw_best = self.raw_best.images_per_second
        naive = {(p.concurrency, p.batch): p.images_per_second for p in self.naive}
        lines = [
            f"{self.model} ({self.architecture} @ {self.input_size[0]}x{self.input_size[1]}, "
            f"{self.precision}), "
            f"{self.cpu_count} CPUs, served as {self.served_layout} (instances x threads); "
            f"median (range) of {self.repeats} runs of {self.seconds:g} s",
            f"{'path':<11} {'layout':>6} {'conc':>4} {'batch':>5} {'img/s (range)':>24} {'p50 ms':>8} "
            f"{'p95 ms':>8} {'/raw':>5} {'/naive':>6}",
        ]
        rows = [*self.raw, *self.served, *self.naive, *([self.end_to_end] if self.end_to_end else [])]
        for p in rows:
            ips = p.images_per_second
            low, high = p.spread
            versus_naive = (
                f"{ips / naive[p.concurrency, p.batch]:>6.2f}"
                if p.path == "served" and naive.get((p.concurrency, p.batch))
                else f"{'-':>6}"
            )
            marked = (
                " *"
                if p is self.raw_best or p is self.served_best or (self.naive and p is best(self.naive))
                else ""
            )
            lines.append(
                f"{p.path:<11} {p.layout or '-':>6} {p.concurrency:>4} {p.batch:>5} "
                f"{f'{ips:.1f} ({low:.1f}-{high:.1f})':>24} {p.p50_ms:>8.1f} {p.p95_ms:>8.1f} "
                f"{ips / raw_best:>5.2f} "
                f"{versus_naive}{marked}"
            )
        ratios = ", ".join(
            f"{key} {value:.2f}" for key, value in self.ratios().items() if isinstance(value, float)
        )
        lines.append(f"at each path's best: {ratios}  (* = best of its path)")
        if self.naive:
            lines.append(f"naive = {self.naive_label}")
        end_to_end = (
            cpu_profile.end_to_end_profile(self.end_to_end, self.cpu_count) if self.end_to_end else {}
        )
        lines += cpu_profile.describe(self.cpu_profile(), end_to_end)
        return "\n".join(lines)


def plot(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    raw_best = result.raw_best
    left.axhline(
        raw_best.images_per_second,
        color="k",
        ls="--",
        label=f"raw ORT ({raw_best.layout}, b{raw_best.batch})",
    )
    lines = [
        (
            [p for p in points if p.batch == per_request],
            style,
            name + (f", {per_request} per request" if per_request > 1 else ""),
        )
        for points, style, name in (
            (result.served, "o-", "served (Triton, gRPC)"),
            (result.naive, "^:", f"naive ({result.naive_label})"),
        )
        for per_request in sorted({p.batch for p in points})
    ]
    for points, style, label in lines:
        concurrency = [p.concurrency for p in points]
        spread = [
            [p.images_per_second - p.spread[0] for p in points],
            [p.spread[1] - p.images_per_second for p in points],
        ]
        left.errorbar(
            concurrency, [p.images_per_second for p in points], yerr=spread, fmt=style, capsize=3, label=label
        )
        right.plot(concurrency, [p.p95_ms for p in points], style, label=f"{label} p95")
    if result.end_to_end is not None:
        e2e = result.end_to_end
        left.plot([e2e.concurrency], [e2e.images_per_second], "s", color="g", label="end-to-end from DICOM")
        right.plot([e2e.concurrency], [e2e.p95_ms], "s", color="g", label="end-to-end request p95")
    ticks = sorted({p.concurrency for p in result.served})
    for axis, label in ((left, "radiographs/s (median, range)"), (right, "p95 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks, [str(c) for c in ticks])
        axis.set_xlabel("requests in flight")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    right.set_yscale("log")
    figure.suptitle(
        f"radserve bench: {result.architecture} {result.precision} @ {result.input_size[0]} px, "
        f"{result.cpu_count} CPUs"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
