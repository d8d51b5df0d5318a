"""Where the cores go during a served run: CPU milliseconds per radiograph by process, and the bound
on served/raw they imply.

On a CPU host the client, tritonserver and the Python-backend stubs (which run ONNX Runtime) share the
same cores. Sampling each one's user + system CPU time around a timed run gives the CPU cost of one
radiograph in each. With the machine busy, the served rate cannot exceed ``cores / total cost``; the
raw engine's cost is its workers' CPU time per radiograph, so everything
outside ONNX Runtime bounds served/raw at ``raw cost / total cost``: the physical limit of this host,
whatever the serving software does, unless that work moves off these cores. The raw workers report
their own CPU time, so the bound holds on a shared machine too (where ``cores / raw rate`` would not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from radserve.loadtests.points import Point, config_label

if TYPE_CHECKING:  # psutil (the loadtest extra) is imported when a profile is taken, not by the CLI
    import psutil


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds (user + system) of each party, and of the whole machine."""

    client: float
    decode_workers: float  # the client's child processes (radserve classify's decode pool)
    tritonserver: float
    backends: float  # the stub processes under tritonserver (ONNX Runtime runs there)
    machine_busy: float
    machine_total: float


def _seconds(times: Any) -> float:
    return float(times.user + times.system)


def _total(processes: Sequence[psutil.Process]) -> float:
    import psutil

    seconds = 0.0
    for process in processes:
        try:
            seconds += _seconds(process.cpu_times())
        except psutil.NoSuchProcess:  # a worker that ended meanwhile: its time is gone with it
            continue
    return seconds


def sample(server_pid: int) -> CpuSample:
    """CPU seconds so far of this process (the client), ``server_pid`` and its children, the machine."""
    import psutil

    server = psutil.Process(server_pid)
    stubs = server.children(recursive=True)
    serving = {server_pid, *(stub.pid for stub in stubs)}
    client = psutil.Process()
    workers = [child for child in client.children(recursive=True) if child.pid not in serving]
    own = client.cpu_times()
    machine = psutil.cpu_times()
    total = sum(machine)
    return CpuSample(
        client=_seconds(own),
        # live workers, and those that ended (their time moves into the parent's children_* fields)
        decode_workers=_total(workers) + own.children_user + own.children_system,
        tritonserver=_seconds(server.cpu_times()),
        backends=_total(stubs),
        machine_busy=total - machine.idle - getattr(machine, "iowait", 0.0),
        machine_total=total,
    )


def per_image(before: CpuSample, after: CpuSample, images: int) -> dict[str, float]:
    """CPU ms per radiograph of each party between two samples, and the machine's busy share."""
    if images <= 0:
        return {}
    costs = {
        name: round(1000 * (getattr(after, name) - getattr(before, name)) / images, 3)
        for name in ("client", "decode_workers", "tritonserver", "backends")
    }
    costs["total"] = round(sum(costs.values()), 3)
    elapsed = after.machine_total - before.machine_total
    costs["machine_busy_share"] = (
        round((after.machine_busy - before.machine_busy) / elapsed, 3) if elapsed else 0
    )
    return costs


def _median_run_costs(point: Point) -> dict[str, float]:
    """The CPU costs of ``point``'s median run by throughput, whole (they add up; medians would not)."""
    runs = [run for run in point.runs if run.extra.get("cpu_ms_per_image")]
    if not runs:
        return {}
    runs.sort(key=lambda run: run.images_per_second)
    return runs[(len(runs) - 1) // 2].extra["cpu_ms_per_image"]


def profile(served: Point, raw: Point, cores: int) -> dict[str, Any]:
    """The served point's CPU costs against the raw engine's, and the bound they set."""
    costs = _median_run_costs(served)
    if not costs or not costs["total"] or raw.images_per_second <= 0:
        return {}
    # the raw workers' own CPU time per radiograph; cores / rate only when they did not report it
    engine = _median_run_costs(raw).get("engine") or 1000 * cores / raw.images_per_second
    return {
        "concurrency": served.concurrency,
        "per_request": served.batch,
        "cpu_ms_per_image": costs,
        "raw_engine_cpu_ms_per_image": round(engine, 3),
        "outside_engine_cpu_ms_per_image": round(costs["total"] - engine, 3),
        "served_over_raw_bound": round(engine / costs["total"], 3),
        "served_bound_images_per_second": round(1000 * cores / costs["total"], 1),
    }


def end_to_end_profile(point: Point | None, cores: int) -> dict[str, Any]:
    """The end-to-end path's CPU per radiograph (decode workers included) and the rate it allows."""
    costs = _median_run_costs(point) if point is not None else {}
    if not costs or not costs["total"]:
        return {}
    return {"cpu_ms_per_image": costs, "bound_images_per_second": round(1000 * cores / costs["total"], 1)}


def _costs(costs: dict[str, float]) -> str:
    return (
        f"client {costs['client']:.2f} ms, decode workers {costs['decode_workers']:.2f} ms, "
        f"tritonserver {costs['tritonserver']:.2f} ms, "
        f"backend stubs (ONNX Runtime) {costs['backends']:.2f} ms, total {costs['total']:.2f} ms; "
        f"machine busy {costs['machine_busy_share']:.0%}"
    )


def describe(figures: dict[str, Any], end_to_end: dict[str, Any]) -> Sequence[str]:
    """Lines for the bench table."""
    lines = []
    if figures:
        lines += [
            f"CPU per radiograph, served at c={config_label(figures['concurrency'], figures['per_request'])} "
            "(median run): " + _costs(figures["cpu_ms_per_image"]),
            f"  raw engine {figures['raw_engine_cpu_ms_per_image']:.2f} ms per radiograph: "
            f"{figures['outside_engine_cpu_ms_per_image']:.2f} ms outside it bound served/raw at "
            f"{figures['served_over_raw_bound']:.2f} on these cores",
        ]
    if end_to_end:
        lines += [
            "CPU per radiograph, end to end (median run): " + _costs(end_to_end["cpu_ms_per_image"]),
            f"  these cores allow at most {end_to_end['bound_images_per_second']:.1f} radiographs/s "
            "end to end",
        ]
    return lines
