"""Decode worker processes that a crashing codec cannot take down with the run.

Each worker is a fresh interpreter running :mod:`radserve.client._decode_worker` (never the caller's
``__main__``), so the API behaves the same from a script without a main guard, ``python -``,
``python -c``, a notebook or an asyncio service. A worker prepares one file at a time, so a worker
that dies (a codec's segfault or abort) was holding exactly one file: that file is tried once more,
alone, in a fresh worker, and gets a ``decoder_crashed`` row if it kills that one too. A file that
takes longer than ``timeout`` seconds (a hung codec) gets a ``decode_timeout`` row and its worker is
killed and replaced; each worker's address space is capped (``memory_bytes``, RLIMIT_AS). Workers
that cannot start are one :class:`~radserve.errors.DecodeWorkersError` for the run.

Why processes and not threads (measured on 2 cores shared with other work, 2500 x 2048 files,
docs/reference/python-api.md, "Overview"): imagecodecs, the display LUT and cv2's resize release the GIL, but
pydicom's native and RLE paths do not (2 threads ran them at 0.5 to 1.1 times one thread), and only a
process isolates a crashing codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from radserve.client._decode_worker import BOOTSTRAP
from radserve.client.flow import PreparedFile
from radserve.errors import ConfigurationError, DecodeWorkersError
from radserve.model_card import ModelCard
from radserve.reasons import Reason
from radserve.routing import RouterCard
from radserve.settings import SETTINGS


class _WorkerDied(Exception):
    """A worker process ended while it held a file."""


class _Worker:
    """One worker process and its pipes (blocking calls, made from the pool's I/O threads); with
    ``hide``, what it writes to stderr reaches this process's stderr through ``hide``."""

    def __init__(
        self, imports: tuple[str, ...], memory_bytes: int, hide: Callable[[str], str] | None = None
    ) -> None:
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, str(memory_bytes)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None if hide is None else subprocess.PIPE,
            )
        except OSError as error:
            raise DecodeWorkersError(f"decode workers could not start: {sys.executable}: {error}") from None
        self._relay: threading.Thread | None = None
        if hide is not None and self._process.stderr is not None:
            self._relay = threading.Thread(
                target=_relay, args=(self._process.stderr, hide), name="radserve-decode-stderr", daemon=True
            )
            self._relay.start()
        try:
            self._write(list(sys.path))
            self._write(list(imports))
            hello = self._read()  # ("ready", pid) or ("failed", message)
            if not isinstance(hello, tuple) or hello[0] != "ready":
                raise _WorkerDied(str(hello[1]) if isinstance(hello, tuple) else repr(hello))
        except _WorkerDied as error:
            self.close()
            raise DecodeWorkersError(f"decode workers could not start: {error}") from None

    def _write(self, message: object) -> None:
        assert self._process.stdin is not None
        try:
            pickle.dump(message, self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _WorkerDied(self._ended()) from None

    def _read(self) -> object:
        assert self._process.stdout is not None
        try:
            return pickle.load(self._process.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            raise _WorkerDied(self._ended()) from None

    def _ended(self) -> str:
        code = self._process.wait()
        if code < 0:
            return f"the worker process was killed by {signal.Signals(-code).name}"
        return f"the worker process exited with code {code}"

    def prepare(self, path: str, card: ModelCard | RouterCard) -> PreparedFile:
        self._write((path, card))
        prepared = self._read()
        assert isinstance(prepared, PreparedFile)
        return prepared

    def kill(self) -> None:
        """End a worker stuck on a file: its pending read then raises :class:`_WorkerDied`."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._relay is not None:
            self._relay.join(10)


def _relay(stream: IO[bytes], hide: Callable[[str], str]) -> None:
    """Copy a worker's stderr, line by line through ``hide``, to this process's stderr until it ends."""
    with stream:
        for line in stream:
            sys.stderr.write(hide(line.decode("utf-8", errors="replace")))
            sys.stderr.flush()


class DecodePool:
    """``workers`` decode processes; ``imports`` are modules each imports first (e.g. codec plugins);
    ``hide`` rewrites what they write to stderr (``--pseudonymize-paths``).

    Use as ``async with DecodePool(n) as pool: prepared = await pool.prepare(path, card)``.
    """

    def __init__(
        self,
        workers: int,
        imports: tuple[str, ...] = (),
        *,
        timeout: float = SETTINGS.client.decode_timeout_seconds,
        memory_bytes: int = SETTINGS.client.decode_worker_memory_bytes,
        hide: Callable[[str], str] | None = None,
    ) -> None:
        if workers < 1:
            raise ConfigurationError("at least one decode worker is needed")
        self._size = workers
        self._imports = imports
        self._timeout, self._memory_bytes = timeout, memory_bytes
        self._hide = hide
        self._io = ThreadPoolExecutor(workers, thread_name_prefix="radserve-decode")
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: list[_Worker] = []

    async def _start(self) -> _Worker:
        loop = asyncio.get_running_loop()
        worker = await loop.run_in_executor(self._io, _Worker, self._imports, self._memory_bytes, self._hide)
        self._all.append(worker)
        return worker

    async def _replace(self, worker: _Worker) -> _Worker:
        self._all.remove(worker)
        await asyncio.get_running_loop().run_in_executor(self._io, worker.close)
        return await self._start()

    async def prepare(self, path: str, card: ModelCard | RouterCard) -> PreparedFile:
        """Decode, display-process and resize ``path`` in a worker; errors come back as values."""
        loop = asyncio.get_running_loop()
        worker = await self._idle.get()
        try:
            for attempt in range(2):
                answer = loop.run_in_executor(self._io, worker.prepare, path, card)
                try:
                    return await asyncio.wait_for(asyncio.shield(answer), self._timeout)
                except TimeoutError:
                    worker.kill()
                    with contextlib.suppress(_WorkerDied):
                        await answer
                    worker = await self._replace(worker)
                    why = f"{path}: not decoded within {self._timeout:g} s (the worker was replaced)"
                    return PreparedFile(path, error_reason=Reason.DECODE_TIMEOUT, error=why)
                except _WorkerDied as died:
                    worker = await self._replace(worker)
                    if attempt:
                        return PreparedFile(
                            path, error_reason=Reason.DECODER_CRASHED, error=f"{path}: {died}"
                        )
            raise AssertionError("unreachable")
        finally:
            self._idle.put_nowait(worker)

    async def __aenter__(self) -> DecodePool:
        started = await asyncio.gather(*(self._start() for _ in range(self._size)), return_exceptions=True)
        failures = [result for result in started if isinstance(result, BaseException)]
        if failures:
            await self.__aexit__(None, None, None)
            raise failures[0]
        for worker in self._all:
            self._idle.put_nowait(worker)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._io, worker.close) for worker in self._all))
        self._all.clear()
        self._io.shutdown(wait=True)
