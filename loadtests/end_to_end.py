"""The end-to-end path of ``radserve bench``: DICOM files to result rows through ``classify``'s runner.

One run is one ``classify`` call over the folder's files, cycled: its decode workers start once, a
warm-up follows the first row, then a window of ``seconds`` is measured in steady state (rows
completed in it, their request latencies, and, with the server's pid, the CPU each process spent in
it: :mod:`radserve.loadtests.cpu_profile`). When the window closes, no more files are submitted and
the call drains.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radserve.errors import ConfigurationError
from radserve.loadtests import cpu_profile
from radserve.loadtests.points import REPEATS, Point, Run, interleaved, timed_run, warm_up_seconds

if TYPE_CHECKING:  # the client is imported when a measurement runs (the CLI imports this module)
    from radserve.client.connection import ConnectionOptions


class _Window:
    """The measured window of one run, opened by rows (``on_rows``) and closing the file stream."""

    def __init__(self, seconds: float, server_pid: int | None) -> None:
        self.seconds = seconds
        self.server_pid = server_pid
        self.first_row: float | None = None
        self.opened: float | None = None
        self.closed: float | None = None
        self.radiographs = 0
        self.errors = 0
        self.latencies: list[float] = []
        self.cpu: list[cpu_profile.CpuSample] = []

    def _sample(self) -> None:
        if self.server_pid:
            self.cpu.append(cpu_profile.sample(self.server_pid))

    def on_rows(self, rows: list[Any]) -> None:
        now = time.perf_counter()
        if self.first_row is None:
            self.first_row = now
        if self.opened is None and now >= self.first_row + warm_up_seconds(self.seconds):
            self.opened = now
            self._sample()
            return  # rows finishing as the window opens belong to the warm-up
        if self.opened is None or self.closed is not None:
            return
        self.radiographs += sum(row.status == "ok" for row in rows)
        self.errors += sum(row.status != "ok" for row in rows)
        self.latencies.extend((row.latency_ms or 0) / 1000 for row in rows if row.status == "ok")
        if now >= self.opened + self.seconds:
            self.closed = now
            self._sample()

    def files(self, files: list[Path]) -> Iterator[Path]:
        for path in itertools.cycle(files):
            if self.closed is not None:
                return
            yield path

    def run(self) -> Run:
        if self.opened is None or self.closed is None:
            raise RuntimeError("the end-to-end run ended before its measuring window closed")
        run = timed_run(self.latencies, self.radiographs, self.closed - self.opened)
        if len(self.cpu) == 2:
            run.extra["cpu_ms_per_image"] = cpu_profile.per_image(*self.cpu, self.radiographs)
        return run


def measure_end_to_end(
    connection: str | ConnectionOptions,
    model: str,
    folder: Path,
    seconds: float,
    max_in_flight: int,
    repeats: int = REPEATS,
    server_pid: int | None = None,
) -> Point:
    """``repeats`` steady-state runs of the classify runner over ``folder``'s files, cycled, against a
    URL or the connection flags' servers."""
    from radserve.client.classify import ClassifyOptions, classify
    from radserve.client.connection import ConnectionOptions
    from radserve.client.inputs import discover

    files = discover([folder]).files
    if not files:
        raise ConfigurationError(f"no DICOM files in {folder}")
    options = ClassifyOptions(max_in_flight=max_in_flight).with_connection(ConnectionOptions.of(connection))
    errors = 0

    def measure(_: int) -> Run:
        nonlocal errors
        window = _Window(seconds, server_pid)
        asyncio.run(classify(window.files(files), model, window.on_rows, options))
        errors += window.errors
        return window.run()

    (runs,) = interleaved([0], measure, repeats)
    extra = {"files": len(files), "errors": errors, "workers": options.workers}
    return Point("end_to_end", max_in_flight, options.images_per_request, runs, extra=extra)
