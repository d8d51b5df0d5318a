"""A one-line progress display on a terminal: files done, radiographs/s, errors. Silent otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from radserve.client.results import ResultRow


class Progress:
    """Counts rows as they arrive and redraws at most every ``interval`` seconds."""

    def __init__(self, total_files: int, stream: TextIO = sys.stderr, interval: float = 0.5) -> None:
        self.total_files = total_files
        self.stream = stream
        self.interval = interval
        self.enabled = stream.isatty()
        self.radiographs = 0
        self.errors = 0
        self._paths: set[str] = set()
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, row: ResultRow) -> None:
        self._paths.add(row.path)
        if row.status == "ok":
            self.radiographs += 1
        elif row.status == "error":
            self.errors += 1
        now = time.monotonic()
        if self.enabled and now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now: float) -> None:
        done = len(self._paths)
        width = 30
        filled = width * done // max(1, self.total_files)
        rate = self.radiographs / max(1e-9, now - self._started)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r[{bar}] {done}/{self.total_files} files  {rate:6.1f} radiographs/s  {self.errors} errors"
        )
        self.stream.flush()
