"""Where the cores go during a served run: CPU milliseconds per radiograph by process, and the bound
on served/raw they imply.

On a CPU host the client, tritonserver and the Python-backend stubs (which run ONNX Runtime) share the
same cores. Sampling each one's user + system CPU time around a timed run gives the CPU cost of one
radiograph in each. With the machine busy, the served rate cannot exceed ``cores / total cost``; the
raw engine's cost is ``cores / raw rate`` (its best layout keeps every core busy), so everything
outside ONNX Runtime bounds served/raw at ``raw cost / total cost``: the physical limit of this host,
whatever the serving software does, unless that work moves off these cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from radserve.loadtests.points import Point


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds (user + system) of each party, and of the whole machine."""

    client: float
    tritonserver: float
    backends: float  # the stub processes under tritonserver (ONNX Runtime runs there)
    machine_busy: float
    machine_total: float


def _seconds(times: Any) -> float:
    return float(times.user + times.system)


def sample(server_pid: int) -> CpuSample:
    """CPU seconds so far of this process (the client), ``server_pid`` and its children, the machine."""
    server = psutil.Process(server_pid)
    backends = 0.0
    for child in server.children(recursive=True):
        try:
            backends += _seconds(child.cpu_times())
        except psutil.NoSuchProcess:
            continue
    machine = psutil.cpu_times()
    total = sum(machine)
    return CpuSample(
        client=_seconds(psutil.Process().cpu_times()),
        tritonserver=_seconds(server.cpu_times()),
        backends=backends,
        machine_busy=total - machine.idle - getattr(machine, "iowait", 0.0),
        machine_total=total,
    )


def per_image(before: CpuSample, after: CpuSample, images: int) -> dict[str, float]:
    """CPU ms per radiograph of each party between two samples, and the machine's busy share."""
    if images <= 0:
        return {}
    costs = {
        name: round(1000 * (getattr(after, name) - getattr(before, name)) / images, 3)
        for name in ("client", "tritonserver", "backends")
    }
    costs["total"] = round(sum(costs.values()), 3)
    elapsed = after.machine_total - before.machine_total
    costs["machine_busy_share"] = (
        round((after.machine_busy - before.machine_busy) / elapsed, 3) if elapsed else 0
    )
    return costs


def profile(served: Point, raw: Point, cores: int) -> dict[str, Any]:
    """The served point's median CPU costs against the raw engine's, and the bound they set."""
    runs = sorted(
        (run for run in served.runs if run.extra.get("cpu_ms_per_image")),
        key=lambda run: run.images_per_second,
    )
    if not runs or raw.images_per_second <= 0:
        return {}
    costs = runs[(len(runs) - 1) // 2].extra["cpu_ms_per_image"]  # the median run's, whole (they add up)
    engine = 1000 * cores / raw.images_per_second
    return {
        "concurrency": served.concurrency,
        "cpu_ms_per_image": costs,
        "raw_engine_cpu_ms_per_image": round(engine, 3),
        "outside_engine_cpu_ms_per_image": round(costs["total"] - engine, 3),
        "served_over_raw_bound": round(engine / costs["total"], 3) if costs["total"] else 0.0,
        "served_bound_images_per_second": round(1000 * cores / costs["total"], 1) if costs["total"] else 0.0,
    }


def describe(figures: dict[str, Any]) -> Sequence[str]:
    """Lines for the bench table."""
    if not figures:
        return []
    costs = figures["cpu_ms_per_image"]
    return [
        f"CPU per radiograph at c={figures['concurrency']} (median run): client {costs['client']:.2f} ms, "
        f"tritonserver {costs['tritonserver']:.2f} ms, "
        f"backend stubs (ONNX Runtime) {costs['backends']:.2f} ms, "
        f"total {costs['total']:.2f} ms; machine busy {costs['machine_busy_share']:.0%}",
        f"raw engine {figures['raw_engine_cpu_ms_per_image']:.2f} ms per radiograph: "
        f"{figures['outside_engine_cpu_ms_per_image']:.2f} ms outside it bound served/raw at "
        f"{figures['served_over_raw_bound']:.2f} on these cores",
    ]
