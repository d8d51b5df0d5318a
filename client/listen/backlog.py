"""What the listener knows about the instances it received: done, waiting, and when to try again.

One lock guards it all, because association threads (admitting instances) and the classifying
thread (finishing them) both change it. Keys are spool paths (``<SOPInstanceUID>.dcm``), the
``path`` of the instance's rows.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["Admission", "Backlog", "Retry"]

Admission = Literal["received", "duplicate", "conflict", "queue_full", "spool_full"]


@dataclass(frozen=True)
class Retry:
    """When an instance is tried again, and how the backlog stands (for the log line)."""

    tries: int
    delay: float
    backlog: int
    oldest_seconds: float


class Backlog:
    """Done keys (from the results file), waiting instances, their sizes, digests and retries.

    Args:
        done: keys that have their final rows.
        digests: content hash of each instance spooled so far, by file name.
        conflicts: names of the conflicting instances already kept.
        alias: what a key is in ``done``: the path its rows carry (a pseudonym under
            ``--pseudonymize-paths``).
    """

    def __init__(
        self,
        done: set[str],
        digests: dict[str, str],
        conflicts: set[str],
        alias: Callable[[str], str] = str,
    ) -> None:
        self._lock = threading.Lock()
        self._done, self._digests, self._conflicts = done, digests, conflicts
        self._alias = alias
        self._waiting: set[str] = set()
        self._since: dict[str, float] = {}
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._tries: dict[str, int] = {}
        self._failures: dict[str, int] = {}
        self._later: list[tuple[float, str]] = []  # (monotonic time of the next try, key)
        self._alone: set[str] = set()  # classified one per round, to find the one that raises

    @property
    def depth(self) -> int:
        """Instances spooled without their final row."""
        return len(self._waiting)

    def admit(self, key: str, size: int, digest: str, max_queue: int, max_bytes: int) -> Admission:
        """Decide on a received instance; ``received`` reserves its place in the backlog."""
        name = Path(key).name
        with self._lock:
            if self._alias(key) in self._done or key in self._waiting:
                return "duplicate" if self._digests.get(name, digest) == digest else "conflict"
            if len(self._waiting) >= max_queue:
                return "queue_full"
            if self._bytes + size > max_bytes:
                return "spool_full"
            self._add(key, time.time(), size)
            self._digests[name] = digest
            return "received"

    def add_spooled(self, path: Path) -> None:
        """An instance found in the spool at start."""
        stat = path.stat()
        with self._lock:
            self._add(str(path), stat.st_mtime, stat.st_size)

    def _add(self, key: str, since: float, size: int) -> None:
        self._waiting.add(key)
        self._since[key], self._sizes[key] = since, size
        self._bytes += size

    def first_conflict(self, name: str) -> bool:
        """Whether the conflicting instance ``name`` is new (it is remembered from now on)."""
        with self._lock:
            known = name in self._conflicts
            self._conflicts.add(name)
            return not known

    def forget_conflict(self, name: str) -> None:
        with self._lock:
            self._conflicts.discard(name)

    def withdraw(self, key: str) -> None:
        """An admitted instance that could not be spooled."""
        with self._lock:
            self._drop(key)

    def finish(self, key: str) -> None:
        """The instance has its final row."""
        with self._lock:
            self._done.add(self._alias(key))
            self._drop(key)

    def is_done(self, key: str) -> bool:
        return self._alias(key) in self._done

    def _drop(self, key: str) -> None:
        self._waiting.discard(key)
        self._alone.discard(key)
        self._bytes -= self._sizes.pop(key, 0)
        for state in (self._tries, self._failures, self._since):
            state.pop(key, None)

    def schedule(self, key: str, initial: float, maximum: float) -> Retry:
        """Try ``key`` again after a doubling delay (``initial``, at most ``maximum`` seconds)."""
        with self._lock:
            tries = self._tries[key] = self._tries.get(key, 0) + 1
            delay = min(initial * 2 ** (tries - 1), maximum)
            heapq.heappush(self._later, (time.monotonic() + delay, key))
            return Retry(tries, delay, len(self._waiting), self.oldest_seconds())

    def fail(self, key: str) -> int:
        """Count an exception while handling ``key``; how many so far."""
        with self._lock:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            return failures

    def due(self) -> list[str]:
        """Keys whose next try is due, out of the schedule."""
        now = time.monotonic()
        with self._lock:
            due = []
            while self._later and self._later[0][0] <= now:
                due.append(heapq.heappop(self._later)[1])
            return due

    def unsettled(self, paths: Iterable[Path]) -> list[Path]:
        """Those of ``paths`` that have no final row and no later try scheduled."""
        with self._lock:
            later = {key for _, key in self._later}
            return [path for path in paths if str(path) in self._waiting and str(path) not in later]

    def isolate(self, paths: Iterable[Path]) -> None:
        """Classify these one per round from now on, until each has its final row."""
        with self._lock:
            self._alone.update(str(path) for path in paths)

    def is_alone(self, key: str) -> bool:
        return key in self._alone

    def oldest_seconds(self) -> float:
        """Seconds since the oldest waiting instance was received (0 when none waits)."""
        since = list(self._since.values())
        return max(0.0, time.time() - min(since)) if since else 0.0
