"""Blocking API over the asyncio client, for scripts and applications without an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from radserve.client.classify import ClassifyOptions, RunSummary, classify
from radserve.client.grpc_client import AsyncRadiographClient, Prediction, RetryPolicy
from radserve.client.inputs import discover
from radserve.client.results import ResultRow
from radserve.model_card import ModelCard
from radserve.security import ClientTls
from radserve.settings import SETTINGS

T = TypeVar("T")


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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="radserve-grpc", daemon=True)
        self._thread.start()
        options = {"max_in_flight": max_in_flight, "retry": retry, "tls": tls, "admin_key": admin_key}
        self._client = self._run(self._connect(url, options))

    @staticmethod
    async def _connect(url: str, options: dict[str, Any]) -> AsyncRadiographClient:
        return AsyncRadiographClient(url, **options)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

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

    def infer(self, model: str, images: np.ndarray) -> Prediction:
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

    def infer_many(self, model: str, images: Sequence[np.ndarray]) -> list[Prediction]:
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
        if self._loop.is_running():
            self._run(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    def __enter__(self) -> RadiographClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


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
