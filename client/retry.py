"""When the client retries: failure kinds, jittered backoff, and a retry budget that sheds load.

A full queue is Triton shedding load. Retrying every shed request at once would multiply the load
that caused it, so retries of requests the server *answered* with overload (or that outlived their
deadline) spend tokens of a :class:`RetryBudget`: every request sent earns ``ratio`` token, a retry
costs one, and the bucket holds at most ``burst``. Over any stretch of requests, retries stay
below ``burst + ratio x requests``; when the budget is spent, the request ends as ``overloaded``.
A server that cannot be reached at all (restarting), or that is draining after SIGTERM ("not at
ready state"), gets no load from retries: those wait with backoff, go to another replica when
there is one, until ``give_up_after_seconds``, without spending the budget.

Inference is idempotent (a pure function of the image: no state changes on the server), so a
request that outlived its deadline may be sent again, at most ``deadline_retries`` times.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from radserve.reasons import Reason
from radserve.settings import SETTINGS

# tritonserver answers a full queue, or a request that timed out in the queue, with UNAVAILABLE.
_SHED_MESSAGES = ("queue", "timeout", "timed out")
# tritonserver 2.51 answers "Request for unknown model: 'M' version V is not at ready state"
# (UNAVAILABLE) both from SIGTERM until it exits (draining: another replica serves V) and for a
# version it unloaded (gone); the client tells them apart by asking (grpc_client).
NOT_READY = "not_ready"
_NOT_READY_MESSAGE = "is not at ready state"


def failure_kind(status: str, message: str) -> str:
    """The kind of a gRPC failure: a row reason (overloaded, server_unavailable, version_unavailable:
    the version a run is pinned to was unloaded, deadline_exceeded, inference_failed), or
    :data:`NOT_READY` (draining or version gone: the caller asks which)."""
    if _NOT_READY_MESSAGE in message:
        return NOT_READY
    if "unknown model" in message and "version" in message:
        return Reason.VERSION_UNAVAILABLE
    if status == "StatusCode.RESOURCE_EXHAUSTED":
        return Reason.OVERLOADED
    if status == "StatusCode.UNAVAILABLE":
        shed = any(marker in message.lower() for marker in _SHED_MESSAGES)
        return Reason.OVERLOADED if shed else Reason.SERVER_UNAVAILABLE
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return Reason.DEADLINE_EXCEEDED
    return Reason.INFERENCE_FAILED


class RetryBudget:
    """Token bucket bounding retries to ``burst + ratio x requests`` (thread-safe; share it freely)."""

    def __init__(
        self,
        ratio: float = SETTINGS.client.retry_budget_ratio,
        burst: float = SETTINGS.client.retry_budget_burst,
    ) -> None:
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.refused = 0

    def sent(self) -> None:
        """A first attempt went out: earn ``ratio`` token."""
        with self._lock:
            self.requests += 1
            self._tokens = min(self.burst, self._tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take a token for one retry; ``False`` when the budget is spent."""
        with self._lock:
            if self._tokens >= 1:
                self._tokens -= 1
                self.retries += 1
                return True
            self.refused += 1
            return False


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a total time per request."""

    initial_backoff_seconds: float = SETTINGS.client.retry_initial_backoff_seconds
    max_backoff_seconds: float = SETTINGS.client.retry_max_backoff_seconds
    give_up_after_seconds: float = SETTINGS.client.retry_give_up_after_seconds
    request_timeout_seconds: float = SETTINGS.client.request_timeout_seconds
    deadline_retries: int = SETTINGS.client.deadline_retries

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff_seconds, self.initial_backoff_seconds * 2**attempt))

    def may_retry(self, kind: str, deadline_retries: int, elapsed: float, budget: RetryBudget) -> bool:
        """Whether a failure of ``kind`` is retried (spending the budget where it must)."""
        if elapsed > self.give_up_after_seconds:
            return False
        if kind == Reason.SERVER_UNAVAILABLE:
            return True
        if kind == Reason.DEADLINE_EXCEEDED and deadline_retries >= self.deadline_retries:
            return False
        return kind in (Reason.OVERLOADED, Reason.DEADLINE_EXCEEDED) and budget.try_spend()
