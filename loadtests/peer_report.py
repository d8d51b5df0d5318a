"""What ``radserve bench --peers`` reports: each server at its own best, radserve's ratio to it, the
engine limit, failed requests, and the CPU each server spent per radiograph; as JSON and Markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radserve.loadtests.points import Point, best, config_label


@dataclass
class PeersResult:
    model: str
    architecture: str
    precision: str
    input_size: tuple[int, int]
    cpu_count: int
    layout: tuple[int, int]  # engine sessions x threads, the same for every server
    onnxruntime: str
    raw: list[Point]  # the engine's limit on this host (loadtests/raw.py)
    servers: dict[str, list[Point]]  # radserve first, then each peer in the order measured
    peers: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> version, protocol, batching
    repeats: int = 3
    seconds: float = 3.0

    def best_of(self, server: str) -> Point:
        return best(self.servers[server])

    def ratios(self) -> dict[str, Any]:
        """radserve's best over each peer's best, and each server's best over the engine limit."""
        ours = self.best_of("radserve").images_per_second
        limit = best(self.raw).images_per_second
        return {
            "radserve_over_peer_best": {
                name: round(ours / self.best_of(name).images_per_second, 3)
                for name in self.servers
                if name != "radserve" and self.best_of(name).images_per_second
            },
            "best_over_engine_limit": {
                name: round(self.best_of(name).images_per_second / limit, 3) for name in self.servers
            },
        }

    def failed_requests(self) -> dict[str, int]:
        return {
            name: sum(point.extra.get("failed_requests", 0) for point in points)
            for name, points in self.servers.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "architecture": self.architecture,
            "precision": self.precision,
            "input_size": list(self.input_size),
            "cpu_count": self.cpu_count,
            "layout": f"{self.layout[0]}x{self.layout[1]}",
            "onnxruntime": self.onnxruntime,
            "repeats": self.repeats,
            "seconds": self.seconds,
            "peers": self.peers,
            "raw": [point.to_dict() for point in self.raw],
            "servers": {name: [point.to_dict() for point in points] for name, points in self.servers.items()},
            "ratios": self.ratios(),
            "failed_requests": self.failed_requests(),
        }

    def table(self) -> str:
        return peers_table(self.to_dict())


def _best(points: list[dict[str, Any]]) -> dict[str, Any]:
    return max(points, key=lambda point: point["images_per_second"])


def peers_table(data: dict[str, Any]) -> str:
    """Markdown of a ``peers.json``: each server at its best point, then every point of the grid."""
    limit = _best(data["raw"])
    servers = data["servers"]
    ratios, failed = data["ratios"], data["failed_requests"]
    lines = [
        f"{data['architecture']} {data['precision']} @ {data['input_size'][0]}, ONNX Runtime "
        f"{data['onnxruntime']}, {data['layout']} (sessions x threads) in every server, {data['cpu_count']} "
        f"cores; engine limit {limit['images_per_second']:.1f} img/s (raw, {limit['layout']}, batch "
        f"{limit['batch']}); median (range) of {data['repeats']} runs of {data['seconds']:g} s per point.",
        "",
        "| server | batching | best img/s (range) | at | p99 ms | CPU ms per radiograph | "
        "best / engine limit | radserve / it | failed requests |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, points in servers.items():
        point = _best(points)
        low, high = point["images_per_second_range"]
        batching = data["peers"].get(name, {}).get("batching", "Triton dynamic batcher")
        cpu = point["extra"].get("cpu_ms_per_image", {}).get("total", "")
        lines.append(
            f"| {name} | {batching} | {point['images_per_second']:.1f} ({low:.1f}-{high:.1f}) | "
            f"{config_label(point['concurrency'], point['batch'])} | {point['p99_ms']:.1f} | {cpu} | "
            f"{ratios['best_over_engine_limit'][name]:.2f} | "
            f"{ratios['radserve_over_peer_best'].get(name, '')} | {failed[name]} |"
        )
    configs = [(point["concurrency"], point["batch"]) for point in servers["radserve"]]
    lines += ["", "| img/s | " + " | ".join(config_label(*config) for config in configs) + " |"]
    lines.append("|---|" + "---|" * len(configs))
    for name, points in servers.items():
        rates = {(point["concurrency"], point["batch"]): point["images_per_second"] for point in points}
        lines.append(
            f"| {name} | " + " | ".join(f"{rates.get(config, 0.0):.1f}" for config in configs) + " |"
        )
    return "\n".join(lines)
