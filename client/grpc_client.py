"""asyncio gRPC client for radserve models on Triton: bounded in flight, retried, deadline-bound."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from client.errors import InferenceError, ModelCardError, ServerError
from client.model_card import INPUT_NAME, MODEL_CARD_PARAMETER, OUTPUT_NAME, ModelCard
from server_config.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

# Transient conditions: the server restarting or shedding load. Triton answers a full queue or a
# queue timeout with UNAVAILABLE; a request that outlived its deadline may not have run at all.
RETRYABLE = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.DEADLINE_EXCEEDED"}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a total time per request."""

    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0
    give_up_after_seconds: float = 180.0
    request_timeout_seconds: float = 60.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff_seconds, self.initial_backoff_seconds * 2**attempt))


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one radiograph."""

    probabilities: np.ndarray
    latency_seconds: float
    attempts: int


class AsyncRadiographClient:
    """Sends wire images to one Triton server; at most ``max_in_flight`` requests at a time."""

    def __init__(
        self,
        url: str = SETTINGS.grpc_url,
        *,
        max_in_flight: int = SETTINGS.client_max_in_flight,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.url = url
        self.retry = retry or RetryPolicy()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        size = SETTINGS.grpc_max_message_bytes
        self._client = grpcclient.InferenceServerClient(
            url,
            channel_args=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)],
        )

    async def __aenter__(self) -> AsyncRadiographClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def wait_ready(self, model: str, timeout: float = 30.0) -> None:
        """Wait until ``model`` is ready; :class:`ServerError` if it is unknown or not ready in time."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                if await self._client.is_model_ready(model):
                    return
                index = await self._client.get_model_repository_index(as_json=True)
                known = sorted(entry["name"] for entry in index.get("models", []))
                if model not in known:
                    raise ServerError(
                        f"{self.url}: model {model!r} is not in the server's repository {known}"
                    )
                last = f"model {model!r} is not ready"
            except InferenceServerException as error:
                last = error.message() or str(error)
            if time.monotonic() > deadline:
                raise ServerError(f"{self.url}: {last}")
            await asyncio.sleep(0.5)

    async def model_card(self, model: str) -> ModelCard:
        """The model card the server holds for ``model`` (from its config parameters)."""
        try:
            reply = await self._client.get_model_config(model)
        except InferenceServerException as error:
            raise ServerError(
                f"{self.url}: cannot read config of model {model!r}: {error.message()}"
            ) from None
        parameter = reply.config.parameters.get(MODEL_CARD_PARAMETER)
        if parameter is None:
            raise ModelCardError(f"model {model!r} on {self.url} has no {MODEL_CARD_PARAMETER} parameter")
        return ModelCard.from_json(parameter.string_value)

    async def infer(self, model: str, images: np.ndarray) -> Prediction:
        """Probabilities ``[B, C]`` for wire images ``uint8 [B, 1, H, W]``, retrying transient failures."""
        inputs = [grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")]
        inputs[0].set_data_from_numpy(images)
        outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
        policy = self.retry
        started = time.monotonic()
        attempt = 0
        async with self._in_flight:
            while True:
                sent = time.monotonic()
                try:
                    result = await self._client.infer(
                        model, inputs, outputs=outputs, client_timeout=policy.request_timeout_seconds
                    )
                    probabilities = result.as_numpy(OUTPUT_NAME)
                    return Prediction(probabilities, time.monotonic() - sent, attempt + 1)
                except InferenceServerException as error:
                    status = error.status() or ""
                    waited = time.monotonic() - started
                    if status not in RETRYABLE or waited > policy.give_up_after_seconds:
                        raise InferenceError(
                            f"{status or 'error'} after {attempt + 1} attempt(s): {error.message()}"
                        ) from None
                    delay = policy.backoff(attempt)
                    LOGGER.debug("retrying in %.2f s after %s", delay, status)
                    attempt += 1
                    await asyncio.sleep(delay)
