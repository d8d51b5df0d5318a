"""The client's Prometheus metrics: what a classify run did, in Prometheus' conventions.

Series (base units, ``_total`` counters, histograms so that quantiles aggregate across clients):

- ``radserve_radiographs_total{model,outcome}``: result rows, ``outcome`` ``ok``, ``error`` or
  ``not_accepted`` (outside the model's input contract);
  radiographs/s is ``rate(radserve_radiographs_total{outcome="ok"}[1m])``, never a gauge.
- ``radserve_errors_total{model,reason}``: error rows by reason (``not_dicom``, ``inference_failed``, ...).
- ``radserve_preprocess_seconds{model}``: decode + display processing + resize of one file.
- ``radserve_request_seconds{model}``: one gRPC inference request (its last attempt), as the client sees it.
- ``radserve_end_to_end_seconds{model}``: from a file's submission to the decoder to its result row.
- ``radserve_requests_in_flight{model}``: inference requests handed to the gRPC client, not yet answered.

Each :class:`ClientMetrics` owns its :class:`~prometheus_client.CollectorRegistry`, so runs, tests
and benchmarks in one process never share or collide on series. Expose it while a run lasts with
:meth:`ClientMetrics.serve`, or leave a node_exporter textfile with :meth:`ClientMetrics.write_textfile`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
    write_to_textfile,
)

# Seconds: from a small radiograph at 64 px (about 1 ms) to a JPEG 2000 file behind a full queue or
# retries after a server restart (tens of seconds).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

OUTCOMES = ("ok", "error", "not_accepted")


class ClientMetrics:
    """The radserve client's series in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.radiographs = Counter(
            "radserve_radiographs",
            "Result rows written: one per radiograph (frame), or one per failed file",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.errors = Counter(
            "radserve_errors", "Error rows by reason", ["model", "reason"], registry=self.registry
        )
        self.preprocess_seconds = Histogram(
            "radserve_preprocess_seconds",
            "Decode, display processing and resize of one DICOM file (all its frames)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decoded_files = Counter(
            "radserve_decoded_files",
            "Files prepared, by decoder (cpu, gpu) and why a --decode gpu run left a file to the CPU",
            ["model", "decoder", "fallback_reason"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "radserve_request_seconds",
            "One gRPC inference request (its last attempt), seen from the client",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            "radserve_end_to_end_seconds",
            "From a file's submission to the decoder to its result row",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "radserve_requests_in_flight",
            "Inference requests handed to the gRPC client and not yet answered",
            ["model"],
            registry=self.registry,
        )
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._server: Any = None

    def model(self, model: str) -> None:
        """Create ``model``'s series at zero, so that rates and ratios exist before the first event."""
        with self._lock:
            if model in self._known:
                return
            self._known.add(model)
        for outcome in OUTCOMES:
            self.radiographs.labels(model, outcome)
        for family in (
            self.preprocess_seconds,
            self.request_seconds,
            self.end_to_end_seconds,
            self.in_flight,
        ):
            family.labels(model)

    def observe_row(
        self, model: str, status: str, error_reason: str = "", end_to_end: float | None = None
    ) -> None:
        """Count one result row; ``end_to_end`` seconds since its file was submitted."""
        outcome = status if status in OUTCOMES else "error"
        self.radiographs.labels(model, outcome).inc()
        if outcome == "error":
            self.errors.labels(model, error_reason or "unknown").inc()
        if end_to_end is not None:
            self.end_to_end_seconds.labels(model).observe(end_to_end)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose ``/metrics`` on ``host:port`` (0 picks a free port) from a daemon thread; the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def stop_serving(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def write_textfile(self, path: str | os.PathLike[str]) -> Path:
        """Write the series as a node_exporter textfile (``*.prom``), atomically (temp file + rename)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(target), self.registry)
        return target
