"""Blocking API over the asyncio client and session, for scripts and applications without an event loop.

Each blocking object runs its asyncio twin on an event loop in a private thread (:class:`_LoopThread`),
so it works the same from a script, a notebook or code that already runs inside an event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from radserve.client.classify import classify
from radserve.client.grpc_client import AsyncRadiographClient, Prediction, RetryPolicy
from radserve.client.inputs import discover
from radserve.client.options import ClassifyOptions, RunSummary
from radserve.client.results import ResultRow
from radserve.client.session import Files, PathLike, Run, Session
from radserve.model_card import ModelCard
from radserve.routing import RouterCard
from radserve.settings import SETTINGS
from radserve.transport import ClientTls

__all__ = ["RadiographClient", "SyncRun", "SyncSession", "classify_paths"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a private daemon thread; :meth:`run` waits for a coroutine there."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self, last: Coroutine[Any, Any, object] | None = None) -> None:
        """Run ``last`` (a clean-up) there, then stop the loop and its thread."""
        try:
            if last is not None and self._loop.is_running():
                self.run(last)
        finally:
            if self._loop.is_running():
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
            self._loop.close()


class RadiographClient:
    """Blocking twin of :class:`AsyncRadiographClient`; its event loop runs in a private thread.

    Thread-safe: several threads may call :meth:`infer` at once, and up to ``max_in_flight``
    requests are on the wire together.

    Args:
        url: ``HOST:PORT`` of a server, or several comma-separated (replicas balanced by the client).
        max_in_flight: Requests on the wire at once, at most.
        retry: Backoff of transient failures; the defaults of :class:`RetryPolicy` when None.
        tls: TLS to the servers (mutual with a client certificate); plaintext when None.
        admin_key: The key of servers whose model config is behind ``--admin-key``.
    """

    def __init__(
        self,
        url: str = SETTINGS.grpc_url,
        *,
        max_in_flight: int = SETTINGS.client.max_in_flight,
        retry: RetryPolicy | None = None,
        tls: ClientTls | None = None,
        admin_key: str | None = None,
    ) -> None:
        self._loop = _LoopThread("radserve-grpc")
        options = {"max_in_flight": max_in_flight, "retry": retry, "tls": tls, "admin_key": admin_key}
        self._client = self._run(self._connect(url, options))

    @staticmethod
    async def _connect(url: str, options: dict[str, Any]) -> AsyncRadiographClient:
        return AsyncRadiographClient(url, **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coroutine)

    def wait_ready(self, model: str, timeout: float = 30.0) -> None:
        """Wait until some server has ``model`` ready.

        Args:
            model: The served model's name.
            timeout: Seconds to wait at most.

        Raises:
            ServerError: No server had the model ready in time.
        """
        self._run(self._client.wait_ready(model, timeout))

    def model_card(self, model: str) -> ModelCard:
        """The model card of ``model``, read from its served config.

        Args:
            model: The served model's name.

        Returns:
            The card; later requests to each replica are pinned to the version it describes.

        Raises:
            ServerError: No server answered with the model's config.
            ModelCardError: The config holds no valid card, or replicas serve different cards.
        """
        return self._run(self._client.model_card(model))

    def infer(self, model: str, images: np.ndarray[Any, Any]) -> Prediction:
        """Probabilities for wire images, in one request (retried on transient failures).

        Args:
            model: The served model's name.
            images: Wire images, ``uint8 [B, channels, H, W]`` at the card's input size.

        Returns:
            The probabilities ``[B, C]`` and the version that answered.

        Raises:
            InferenceError: The request failed, after the retries its failure allows.
        """
        return self._run(self._client.infer(model, images))

    def infer_many(self, model: str, images: Sequence[np.ndarray[Any, Any]]) -> list[Prediction]:
        """One request per image, sent concurrently.

        Args:
            model: The served model's name.
            images: Wire images, each ``uint8 [channels, H, W]``.

        Returns:
            One prediction per image, in input order.

        Raises:
            InferenceError: A request failed, after the retries its failure allows.
        """

        async def gather() -> list[Prediction]:
            return list(
                await asyncio.gather(*(self._client.infer(model, image[np.newaxis]) for image in images))
            )

        return self._run(gather())

    def close(self) -> None:
        """Close the channels and stop the private event loop (also on leaving a ``with`` block)."""
        self._loop.close(self._client.close())

    def __enter__(self) -> RadiographClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class SyncSession:
    """Blocking twin of :class:`~radserve.client.session.Session`, for code without an event loop.

    ``with SyncSession(model, options) as session: for rows in session.classify(files): ...``.
    The session's event loop runs in a private thread for the session's lifetime, so decode workers,
    channels and the card are started once however many runs follow. :class:`RadiographClient` stays
    the blocking twin of the wire-level :class:`AsyncRadiographClient`: it is bound to no model and
    owns no decode workers, so the two lifetimes are kept apart.

    Args:
        model: a classifier, a router or a study-level model (MRI).
        options: how to connect and decode; every default comes from ``radserve.settings``.

    Raises:
        ServerError: on entering, when no server has ``model`` ready in time.
        DecodeWorkersError: on entering, when the decode workers cannot start.
    """

    def __init__(self, model: str, options: ClassifyOptions | None = None) -> None:
        self._session = Session(model, options)
        self._loop: _LoopThread | None = None

    def __enter__(self) -> SyncSession:
        self._loop = _LoopThread("radserve-session")
        try:
            self._loop.run(self._session.__aenter__())
        except BaseException:
            self._loop.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.close(self._session.__aexit__(exc_type, exc, traceback))
            self._loop = None

    def _running(self) -> _LoopThread:
        if self._loop is None:
            raise RuntimeError("the session is not open: use `with SyncSession(...)`")
        return self._loop

    @property
    def card(self) -> ModelCard | RouterCard:
        """The served card (a router's routing description for a router)."""
        return self._session.card

    def classify(self, files: Files) -> SyncRun:
        """Classify ``files``; blocking form of :meth:`Session.classify`.

        Args:
            files: DICOM file paths; read lazily in the session's thread, so they must not block.

        Returns:
            A :class:`SyncRun`: ``for rows in run`` gives each file's rows; ``run.summary`` counts them.

        Raises:
            ModelCardError: when the model takes studies (use :meth:`classify_studies`).
        """
        return SyncRun(self._running(), self._session.classify(files))

    def classify_studies(self, files: Iterable[PathLike], lesion_index: int | None = None) -> list[ResultRow]:
        """One row per MRI study among ``files`` (blocking form of :meth:`Session.classify_studies`).

        Args:
            files: DICOM slices in any order.
            lesion_index: the lesion slice along the T1W slice normal (default: the central slice).

        Returns:
            The error rows of unreadable files, then one row per study.

        Raises:
            ModelCardError: when the model takes single radiographs.
        """
        return self._running().run(self._session.classify_studies(list(files), lesion_index))


class SyncRun:
    """The rows of one :meth:`SyncSession.classify` call, one list per file; ``summary`` counts them.

    A loop that stops early should call :meth:`close` so that the files under way are dropped.
    """

    def __init__(self, loop: _LoopThread, run: Run) -> None:
        self._loop = loop
        self._run = run
        self._rows = run.__aiter__()

    @property
    def summary(self) -> RunSummary:
        """The counts so far; the run's wall time once it has ended."""
        return self._run.summary

    def __iter__(self) -> Iterator[list[ResultRow]]:
        return self

    def __next__(self) -> list[ResultRow]:
        try:
            return self._loop.run(_next(self._rows))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Stop the run: files under way are dropped (their rows are not given)."""
        self._loop.run(_close(self._rows))


async def _next(rows: AsyncGenerator[list[ResultRow], None]) -> list[ResultRow]:
    return await anext(rows)


async def _close(rows: AsyncGenerator[list[ResultRow], None]) -> None:
    await rows.aclose()


def classify_paths(
    paths: Iterable[str | Path], model: str, options: ClassifyOptions | None = None
) -> tuple[list[ResultRow], RunSummary]:
    """Classify files and folders and return every row (blocking form of :func:`classify`).

    Works the same from a script, ``python -``/``-c``, a notebook cell or code that runs inside an
    event loop (there the run gets a loop of its own in a private thread).

    Args:
        paths: DICOM files and folders (searched recursively; side files such as ``.csv`` are left out).
        model: The served model's name: a classifier or a router.
        options: Servers, concurrency, decoding, SR output; every default from ``radserve.settings``.

    Returns:
        Every result row (one per radiograph or frame, or one per failed or refused input) and the
        run's counts.

    Raises:
        ServerError: No server has the model ready.
        DecodeWorkersError: The decode workers could not start.
    """
    rows: list[ResultRow] = []
    summary = _run_to_completion(lambda: classify(discover(paths).files, model, rows.extend, options))
    return rows, summary


def _run_to_completion(start: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(start())``, in a private thread when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(start())
    with ThreadPoolExecutor(1, thread_name_prefix="radserve-run") as thread:
        return thread.submit(asyncio.run, start()).result()
