"""asyncio gRPC client for radserve models on Triton: bounded in flight, retried, deadline-bound."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from radserve.errors import InferenceError, ModelCardError, ServerError
from radserve.model_card import INPUT_NAME, MODEL_CARD_PARAMETER, OUTPUT_NAME, ModelCard
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

# Transient conditions: the server restarting or shedding load. Triton answers a full queue or a
# queue timeout with UNAVAILABLE; a request that outlived its deadline may not have run at all.
RETRYABLE = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.DEADLINE_EXCEEDED"}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by a total time per request."""

    initial_backoff_seconds: float = SETTINGS.client.retry_initial_backoff_seconds
    max_backoff_seconds: float = SETTINGS.client.retry_max_backoff_seconds
    give_up_after_seconds: float = SETTINGS.client.retry_give_up_after_seconds
    request_timeout_seconds: float = SETTINGS.client.request_timeout_seconds

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_backoff_seconds, self.initial_backoff_seconds * 2**attempt))


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one radiograph."""

    probabilities: np.ndarray
    latency_seconds: float
    attempts: int
    model_version: str = ""  # the version that answered
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # outputs asked for besides probabilities


@dataclass
class _Endpoint:
    """One server: its channel, requests on it now, and until when it is avoided after a failure."""

    url: str
    client: grpcclient.InferenceServerClient
    in_flight: int = 0
    avoid_until: float = 0.0


class AsyncRadiographClient:
    """Sends wire images to Triton servers; at most ``max_in_flight`` requests at a time in all.

    With several URLs (replicas serving the same models) each request goes to the endpoint with
    the fewest requests in flight, skipping for ``RetryPolicy.max_backoff_seconds`` one that just
    failed; a retried request goes elsewhere when another endpoint is available.
    """

    def __init__(
        self,
        url: str | Sequence[str] = SETTINGS.grpc_url,
        *,
        max_in_flight: int = SETTINGS.client.max_in_flight,
        retry: RetryPolicy | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.url = ",".join(urls)
        self.retry = retry or RetryPolicy()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        size = SETTINGS.client.grpc_max_message_bytes
        options = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
        self._endpoints = [
            _Endpoint(address, grpcclient.InferenceServerClient(address, channel_args=options))
            for address in urls
        ]

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
        for endpoint in self._endpoints:
            await endpoint.client.close()

    def _pick(self) -> _Endpoint:
        now = time.monotonic()
        healthy = [endpoint for endpoint in self._endpoints if endpoint.avoid_until <= now] or self._endpoints
        return min(healthy, key=lambda endpoint: (endpoint.in_flight, endpoint.avoid_until))

    async def wait_ready(self, model: str, timeout: float = 30.0) -> None:
        """Wait until some server has ``model`` ready; :class:`ServerError` if none does in time."""
        deadline = time.monotonic() + timeout
        problems: dict[str, str] = {}
        while True:
            for endpoint in self._endpoints:
                try:
                    if await endpoint.client.is_model_ready(model):
                        return
                    index = await endpoint.client.get_model_repository_index(as_json=True)
                    known = sorted(entry["name"] for entry in index.get("models", []))
                    if model not in known:
                        raise ServerError(
                            f"{endpoint.url}: model {model!r} is not in the server's repository {known}"
                        )
                    problems[endpoint.url] = f"model {model!r} is not ready"
                except InferenceServerException as error:
                    problems[endpoint.url] = error.message() or str(error)
            if time.monotonic() > deadline:
                raise ServerError("; ".join(f"{url}: {problem}" for url, problem in problems.items()))
            await asyncio.sleep(0.5)

    async def model_card(self, model: str) -> ModelCard:
        """The model card a server holds for ``model`` (from its config parameters)."""
        endpoint = self._pick()
        try:
            reply = await endpoint.client.get_model_config(model)
        except InferenceServerException as error:
            raise ServerError(
                f"{endpoint.url}: cannot read config of model {model!r}: {error.message()}"
            ) from None
        parameter = reply.config.parameters.get(MODEL_CARD_PARAMETER)
        if parameter is None:
            raise ModelCardError(f"model {model!r} on {endpoint.url} has no {MODEL_CARD_PARAMETER} parameter")
        return ModelCard.from_json(parameter.string_value)

    async def infer(self, model: str, images: np.ndarray, extra_outputs: Sequence[str] = ()) -> Prediction:
        """Probabilities ``[B, C]`` for wire images ``uint8 [B, 1, H, W]``, retrying transient failures.

        ``extra_outputs`` names further outputs of the model to return in ``Prediction.extra``.
        """
        inputs = [grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")]
        inputs[0].set_data_from_numpy(images)
        outputs = [grpcclient.InferRequestedOutput(name) for name in (OUTPUT_NAME, *extra_outputs)]
        policy = self.retry
        started = time.monotonic()
        attempt = 0
        async with self._in_flight:
            while True:
                endpoint = self._pick()
                endpoint.in_flight += 1
                sent = time.monotonic()
                try:
                    result = await endpoint.client.infer(
                        model, inputs, outputs=outputs, client_timeout=policy.request_timeout_seconds
                    )
                    return Prediction(
                        result.as_numpy(OUTPUT_NAME),
                        time.monotonic() - sent,
                        attempt + 1,
                        result.get_response().model_version,
                        {name: result.as_numpy(name) for name in extra_outputs},
                    )
                except InferenceServerException as error:
                    status = error.status() or ""
                    if status not in RETRYABLE or time.monotonic() - started > policy.give_up_after_seconds:
                        attempts = f"after {attempt + 1} attempt(s)"
                        raise InferenceError(
                            f"{endpoint.url}: {status or 'error'} {attempts}: {error.message()}"
                        ) from None
                    endpoint.avoid_until = time.monotonic() + policy.max_backoff_seconds
                finally:
                    endpoint.in_flight -= 1
                delay = policy.backoff(attempt)
                LOGGER.debug("retrying in %.2f s after %s from %s", delay, status, endpoint.url)
                attempt += 1
                await asyncio.sleep(delay)
