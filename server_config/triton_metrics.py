"""Reading Triton's Prometheus endpoint: the ``nv_inference_*`` series of one model.

- throughput: rate of ``nv_inference_count`` (inferences = radiographs, counted per batch item);
- average batch size: ``nv_inference_count`` / ``nv_inference_exec_count`` (executions = batches);
- queue and compute time: ``nv_inference_queue_duration_us`` and ``nv_inference_compute_infer_duration_us``
  (cumulative microseconds; divide increments by ``nv_inference_request_success`` increments).
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model, summed over its versions."""

    requests: float = 0.0
    inferences: float = 0.0
    executions: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0
    failures: float = 0.0  # requests that failed, rejected by a full queue included

    @property
    def average_batch_size(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0

    def __sub__(self, earlier: ModelCounters) -> ModelCounters:
        return ModelCounters(
            self.requests - earlier.requests,
            self.inferences - earlier.inferences,
            self.executions - earlier.executions,
            self.queue_us - earlier.queue_us,
            self.compute_us - earlier.compute_us,
            self.failures - earlier.failures,
        )


_SERIES = {
    "nv_inference_request_success": "requests",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_us",
    "nv_inference_request_failure": "failures",
}


def model_counters(metrics_url: str, model: str, timeout: float = 5.0) -> ModelCounters:
    """Scrape ``metrics_url`` and sum ``model``'s inference counters."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as reply:
        text = reply.read().decode()
    totals = dict.fromkeys(_SERIES.values(), 0.0)
    for family in text_string_to_metric_families(text):
        field = _SERIES.get(family.name)  # the parser names counter samples "<family>_total"
        if field is None:
            continue
        totals[field] += sum(sample.value for sample in family.samples if sample.labels.get("model") == model)
    return ModelCounters(**totals)


def counters_since(
    metrics_url: str, model: str, before: ModelCounters, requests: int, timeout: float = 10.0
) -> ModelCounters:
    """``model``'s counters since ``before``, once ``requests`` more requests are counted.

    Triton reports a request's statistics when the backend releases it, after the response went out:
    a scrape right after the last answer can miss the last requests. This scrapes until they are all
    counted, or returns what is counted at ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        counted = model_counters(metrics_url, model) - before
        if counted.requests >= requests or time.monotonic() > deadline:
            return counted
        time.sleep(0.05)
