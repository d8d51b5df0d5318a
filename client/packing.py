"""The request step: radiographs ready together travel in one request, each gets its own answer.

:class:`RequestPacker` keeps at most ``max_in_flight`` radiographs on the wire. When slots free, it
sends the radiographs already waiting (up to ``images_per_request`` and the free slots) as one
``[B, 1, H, W]`` request; it never waits for more to arrive, so a lone radiograph is sent at once
and requests grow only when radiographs queue for the wire. Triton's dynamic batcher still merges
requests. Counting radiographs rather than requests keeps the server's queue as deep with packing
as without: 16 requests of 8 (128 radiographs in flight) made MobileNetV3-Small slower here than 16
of 1, while 2 of 8 were faster (docs/reference/python-api.md, "Overview").

A router (:mod:`radserve.routing`) takes one tensor per wire contract: its radiographs are dicts of
input name → ``uint8 [1, H, W]``, stacked per input; each answer's ``Prediction.extra`` then holds
that radiograph's row of every extra output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np

from radserve.client.grpc_client import AsyncRadiographClient, Prediction
from radserve.client.run_metrics import ClientMetrics
from radserve.errors import ConfigurationError

# one radiograph's probabilities [C], and its request's prediction
Answer = tuple[np.ndarray[Any, Any], Prediction]
# one radiograph: its wire image, or one per router input
Wire = np.ndarray[Any, Any] | dict[str, np.ndarray[Any, Any]]


class RequestPacker:
    """Packs wire images ``uint8 [1, H, W]`` of one model into requests; use as ``async with``."""

    def __init__(
        self,
        client: AsyncRadiographClient,
        model: str,
        *,
        images_per_request: int,
        max_in_flight: int,
        metrics: ClientMetrics,
        extra_outputs: Sequence[str] = (),
    ) -> None:
        if images_per_request < 1:
            raise ConfigurationError("images_per_request must be at least 1")
        self._client = client
        self._model = model
        self._images_per_request = images_per_request
        self._metrics = metrics
        self._extra_outputs = tuple(extra_outputs)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._waiting: asyncio.Queue[tuple[Wire, asyncio.Future[Answer]]] = asyncio.Queue()
        self._sending: set[asyncio.Task[None]] = set()
        self._packer: asyncio.Task[None] | None = None

    async def infer(self, image: Wire) -> Answer:
        """The answer for one radiograph; raises what its request raised (e.g. InferenceError)."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        await self._waiting.put((image, answer))
        return await answer

    async def _pack(self) -> None:
        while True:
            await self._slots.acquire()
            batch = [await self._waiting.get()]
            while (
                len(batch) < self._images_per_request
                and not self._waiting.empty()
                and not self._slots.locked()
            ):
                await self._slots.acquire()  # free: returns at once
                batch.append(self._waiting.get_nowait())
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Wire, asyncio.Future[Answer]]]) -> None:
        outcomes: list[Answer] | Exception
        try:
            images = _stacked([image for image, _ in batch])
            with self._metrics.in_flight.labels(self._model).track_inprogress():
                prediction = await self._client.infer(self._model, images, self._extra_outputs)
            self._metrics.request_seconds.labels(self._model).observe(prediction.latency_seconds)
            outcomes = [
                (row, replace(prediction, extra={k: v[index] for k, v in prediction.extra.items()}))
                if prediction.extra
                else (row, prediction)
                for index, row in enumerate(prediction.probabilities)
            ]
            if len(outcomes) != len(batch):
                raise ValueError(f"{len(batch)} radiographs sent, {len(outcomes)} answers received")
        except Exception as error:  # every radiograph of the request gets the failure
            outcomes = error
        finally:
            for _ in batch:
                self._slots.release()
        for index, (_, answer) in enumerate(batch):
            if answer.done():  # its caller was cancelled
                continue
            if isinstance(outcomes, Exception):
                answer.set_exception(outcomes)
            else:
                answer.set_result(outcomes[index])

    async def __aenter__(self) -> RequestPacker:
        self._packer = asyncio.create_task(self._pack())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._packer is not None:
            self._packer.cancel()
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(
            *self._sending, *([self._packer] if self._packer else []), return_exceptions=True
        )


def _stacked(wires: list[Wire]) -> Wire:
    """One request's input: the wire images stacked (per input name for a router; one model's are alike)."""
    first = wires[0]
    if isinstance(first, dict):
        routed = cast(list[dict[str, np.ndarray[Any, Any]]], wires)
        return {name: np.stack([wire[name] for wire in routed]) for name in first}
    stacked: np.ndarray[Any, Any] = np.stack(cast(list[np.ndarray[Any, Any]], wires))
    return stacked
