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


@dataclass(frozen=True, slots=True)
class BatchingDefaults:
    """What export writes into each model's dynamic batching and instance configuration.

    Chosen from measurements on a 2-core CPU host (see README, "Tuning"): batching gains little
    compute there, so a short queue delay only helps requests that already arrive together.
    """

    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_microseconds: int = 500
    max_queue_size: int = 256
    queue_timeout_microseconds: int = 30_000_000
    cpu_instances: int = 1
    gpu_instances: int = 1
    onnxruntime_threads: int = 2


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
