"""radserve's defaults, in one place: ports, batching and runtime threads.

Every component reads its defaults from :data:`SETTINGS`; command-line flags override them per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Ports:
    """Triton's standard endpoints."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _cpu_split(max_instances: int = 4) -> tuple[int, int]:
    """(instances, ONNX Runtime threads each) for this host: one 1-thread instance per core, and
    at most ``max_instances`` instances (each holds a copy of the model) sharing the cores beyond."""
    cores = os.cpu_count() or 1
    instances = max(1, min(max_instances, cores))
    return instances, max(1, cores // instances)


@dataclass(frozen=True, slots=True)
class BatchingDefaults:
    """What export writes into each model's dynamic batching and instance configuration.

    Chosen from measurements on a 2-core CPU host (see README, "Tuning"): batching gains little
    compute there, so a short queue delay only helps requests that already arrive together; one
    single-threaded ONNX Runtime instance per core beat one instance using every core (ResNet-18:
    +30 % served throughput and a lower p95 at 16 in flight; EfficientNet-B0 likewise).
    """

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_microseconds: int = 500
    max_queue_size: int = 256
    queue_timeout_microseconds: int = 30_000_000
    cpu_instances: int = field(default_factory=lambda: _cpu_split()[0])
    gpu_instances: int = 1
    onnxruntime_threads: int = field(default_factory=lambda: _cpu_split()[1])


@dataclass(frozen=True, slots=True)
class Settings:
    """All defaults shared by the server, the exporter and the client."""

    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    batching: BatchingDefaults = field(default_factory=BatchingDefaults)
    model_repository: str = "model_repository"
    # Requests kept in flight by the client: enough for the dynamic batcher to form batches.
    client_max_in_flight: int = 16
    # Processes decoding DICOM on the client.
    client_decode_workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    # Radiographs are large: raise gRPC's 4 MiB default message limits.
    grpc_max_message_bytes: int = 256 * 1024 * 1024
    server_ready_timeout_seconds: float = 120.0

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"


SETTINGS = Settings()
