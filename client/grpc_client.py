"""asyncio gRPC client for radserve models on Triton.

Bounded in flight, retried within a budget, pinned to the model version whose card it read, over TLS
when given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from radserve.client.connection import ConnectionOptions
from radserve.client.retry import NOT_READY, RetryBudget, RetryPolicy, failure_kind
from radserve.errors import InferenceError, ModelCardError, ServerError
from radserve.model_card import (
    INPUT_NAME,
    MODEL_CARD_PARAMETER,
    MODEL_VERSION_PARAMETER,
    OUTPUT_NAME,
    ModelCard,
)
from radserve.reasons import Reason
from radserve.routing import ROUTER_PARAMETER, RouterCard
from radserve.settings import SETTINGS
from radserve.transport import GRPC_ADMIN_KEY_HEADER, ClientTls

LOGGER = logging.getLogger(__name__)

__all__ = [
    "AsyncRadiographClient", "ConnectionOptions", "Prediction", "RetryBudget", "RetryPolicy", "grpc_channel",
]  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """The model's answer to one request.

    Attributes:
        probabilities: ``[B, C]``, one row per wire image; empty when only extra outputs were asked.
        latency_seconds: The last attempt's time on the wire.
        attempts: Attempts sent (1 when not retried).
        model_version: The version that answered.
        extra: Outputs asked for besides the probabilities, by name.
    """

    probabilities: np.ndarray[Any, Any]
    latency_seconds: float
    attempts: int
    model_version: str = ""
    extra: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)


@dataclass
class _Endpoint:
    """One server: its channel, requests on it now, and until when it is avoided after a failure.

    Per model, the version its card describes (requests are pinned to it).
    """

    url: str
    client: grpcclient.InferenceServerClient
    in_flight: int = 0
    avoid_until: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)


class AsyncRadiographClient:
    """Sends wire images to Triton servers; at most ``max_in_flight`` requests at a time in all.

    With several URLs (replicas serving the same models) each request goes to the endpoint with
    the fewest requests in flight, skipping for ``RetryPolicy.max_backoff_seconds`` one that just
    failed; a retried request goes elsewhere when another endpoint is available. A request holds
    its in-flight slot only while on the wire, never while it backs off. ``budget`` bounds retries
    (:class:`RetryBudget`; pass one instance to several clients to bound them together).
    ``admin_key`` is sent on the restricted calls (model config, repository index).

    Args:
        url: ``HOST:PORT`` of a server, or several (replicas serving the same models).
        max_in_flight: Requests on the wire at once, at most, over all servers.
        retry: Backoff of transient failures; the defaults of :class:`RetryPolicy` when None.
        budget: The retry budget; a new one when None.
        tls: TLS to the servers (mutual with a client certificate); plaintext when None.
        admin_key: The key of servers started with ``--admin-key``.

    Raises:
        ValueError: No URL was given.
    """

    def __init__(
        self,
        url: str | Sequence[str] = SETTINGS.grpc_url,
        *,
        max_in_flight: int = SETTINGS.client.max_in_flight,
        retry: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        tls: ClientTls | None = None,
        admin_key: str | None = None,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.url = ",".join(urls)
        self.retry = retry or RetryPolicy()
        self.budget = budget or RetryBudget()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._headers = {GRPC_ADMIN_KEY_HEADER: admin_key} if admin_key else None
        self._endpoints = [_Endpoint(address, grpc_channel(address, tls)) for address in urls]

    @classmethod
    def connect(
        cls,
        connection: ConnectionOptions,
        *,
        max_in_flight: int = SETTINGS.client.max_in_flight,
        budget: RetryBudget | None = None,
    ) -> AsyncRadiographClient:
        """A client of the servers ``connection`` names, with its TLS, admin key and retry policy."""
        return cls(
            connection.urls,
            max_in_flight=max_in_flight,
            retry=connection.retry,
            budget=budget,
            tls=connection.tls,
            admin_key=connection.admin_key,
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
        """Close every server's channel (also on leaving an ``async with`` block)."""
        for endpoint in self._endpoints:
            await endpoint.client.close()

    def _pick(self, model: str, version: str | None = None) -> _Endpoint:
        """The endpoint with the fewest requests in flight, skipping those just failed.

        For a retry (``version``: the one the failed attempt was pinned to), one that serves that version.
        """
        now = time.monotonic()
        healthy = [endpoint for endpoint in self._endpoints if endpoint.avoid_until <= now] or self._endpoints
        same = [endpoint for endpoint in healthy if endpoint.versions.get(model, "") == version]
        return min(same or healthy, key=lambda endpoint: (endpoint.in_flight, endpoint.avoid_until))

    async def wait_ready(self, model: str, timeout: float = 30.0) -> None:
        """Wait until some server has ``model`` ready.

        Args:
            model: The served model's name.
            timeout: Seconds to wait at most.

        Raises:
            ServerError: No server had the model ready in time, or a server's repository lacks it.
        """
        deadline = time.monotonic() + timeout
        problems: dict[str, str] = {}
        while True:
            for endpoint in self._endpoints:
                try:
                    if await endpoint.client.is_model_ready(model):
                        return
                    index = await endpoint.client.get_model_repository_index(
                        headers=self._headers, as_json=True
                    )
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
        """The card of ``model``, read from its config on the first replica that answers.

        Every replica whose card differs from it, or that cannot say, is refused for the rest of the
        run. Requests to each replica are then pinned to the version its config describes.

        Args:
            model: The served model's name.

        Returns:
            The model card.

        Raises:
            ModelCardError: The model is a router, its config holds no valid card, or no replica
                serves the same card.
        """
        card = await self.served_card(model)
        if isinstance(card, RouterCard):
            raise ModelCardError(
                f"model {model!r} is a router (radserve export-router): classify routes through it"
            )
        return card

    async def served_card(self, model: str) -> ModelCard | RouterCard:
        """:meth:`model_card`, or the routing description of a router (:mod:`radserve.routing`).

        Args:
            model: The served model's name.

        Returns:
            The model card, or the router's card.

        Raises:
            ModelCardError: Its config holds no valid card, or no replica serves the same card.
        """
        reference: ModelCard | RouterCard | None = None
        problems = []
        for endpoint in self._endpoints:
            try:
                card, version = await self._read_card(endpoint, model)
            except (ServerError, ModelCardError) as error:
                problems.append(str(error))
                continue
            if reference is not None and card != reference:
                problems.append(f"{endpoint.url}: model {model!r} differs from the first replica's card")
                continue
            reference = card
            endpoint.versions[model] = version
        if reference is None:
            raise ServerError("; ".join(problems))
        refused = [endpoint for endpoint in self._endpoints if model not in endpoint.versions]
        for problem in problems:
            LOGGER.warning("refusing a replica: %s", problem)
        self._endpoints = [endpoint for endpoint in self._endpoints if endpoint not in refused]
        return reference

    async def _read_card(self, endpoint: _Endpoint, model: str) -> tuple[ModelCard | RouterCard, str]:
        try:
            reply = await endpoint.client.get_model_config(model, headers=self._headers)
        except InferenceServerException as error:
            raise ServerError(
                f"{endpoint.url}: cannot read config of model {model!r}: {error.message()}"
            ) from None
        parameters = reply.config.parameters
        version = (
            parameters[MODEL_VERSION_PARAMETER].string_value if MODEL_VERSION_PARAMETER in parameters else ""
        )
        if ROUTER_PARAMETER in parameters:
            return RouterCard.from_json(parameters[ROUTER_PARAMETER].string_value), version
        if MODEL_CARD_PARAMETER not in parameters:
            raise ModelCardError(f"model {model!r} on {endpoint.url} has no {MODEL_CARD_PARAMETER} parameter")
        return ModelCard.from_json(parameters[MODEL_CARD_PARAMETER].string_value), version

    async def infer(
        self,
        model: str,
        images: np.ndarray[Any, Any] | Mapping[str, np.ndarray[Any, Any]],
        extra_outputs: Sequence[str] = (),
        *,
        primary: bool = True,
    ) -> Prediction:
        """Probabilities ``[B, C]`` for wire images, retrying transient failures within the budget.

        Retries follow :mod:`radserve.client.retry`; the request is pinned to the version whose card
        was read from this replica.

        Args:
            model: The served model's name.
            images: Wire images ``uint8 [B, channels, H, W]``, or input names mapped to tensors (a
                router takes one per wire contract).
            extra_outputs: Further outputs of the model to return in ``Prediction.extra``.
            primary: False (a detector): only ``extra_outputs`` are asked for and ``probabilities``
                is empty.

        Returns:
            The answer, with the version that gave it and the attempts it took.

        Raises:
            InferenceError: The request failed, after the retries its failure allows; its
                ``reason`` is a row reason code (``overloaded``, ``server_unavailable``, ...).
        """
        named = images if isinstance(images, Mapping) else {INPUT_NAME: images}
        inputs = []
        for name, tensor in named.items():
            inputs.append(grpcclient.InferInput(name, list(tensor.shape), "UINT8"))
            inputs[-1].set_data_from_numpy(tensor)
        wanted = (OUTPUT_NAME, *extra_outputs) if primary else tuple(extra_outputs)
        outputs = [grpcclient.InferRequestedOutput(name) for name in wanted]
        policy = self.retry
        started = time.monotonic()
        attempt = deadline_retries = 0
        retried: str | None = None  # the version the failed attempt was pinned to
        self.budget.sent()
        while True:
            async with self._in_flight:  # held on the wire only, released while backing off
                endpoint = self._pick(model, retried)
                pinned = endpoint.versions.get(model, "")
                endpoint.in_flight += 1
                sent = time.monotonic()
                try:
                    result = await endpoint.client.infer(
                        model,
                        inputs,
                        model_version=pinned,
                        outputs=outputs,
                        client_timeout=policy.request_timeout_seconds,
                    )
                    return _prediction(
                        result, pinned, endpoint.url, time.monotonic() - sent, attempt + 1, extra_outputs
                    )
                except InferenceServerException as error:
                    status, message = error.status() or "", error.message() or ""
                    kind = failure_kind(status, message)
                    if kind == NOT_READY:
                        kind = await _draining_or_gone(endpoint, model, pinned)
                    if not policy.may_retry(kind, deadline_retries, time.monotonic() - started, self.budget):
                        raise InferenceError(
                            f"{endpoint.url}: {status or 'error'} after {attempt + 1} attempt(s): {message}",
                            kind,
                            attempt + 1,
                        ) from None
                    deadline_retries += kind == Reason.DEADLINE_EXCEEDED
                    endpoint.avoid_until = time.monotonic() + policy.max_backoff_seconds
                    retried = pinned
                finally:
                    endpoint.in_flight -= 1
            delay = policy.backoff(attempt)
            LOGGER.debug("retrying in %.2f s after %s from %s", delay, status, endpoint.url)
            attempt += 1
            await asyncio.sleep(delay)


async def _draining_or_gone(endpoint: _Endpoint, model: str, version: str) -> str:
    """What "version V is not at ready state" meant: version_unavailable or server_unavailable.

    version_unavailable when the model is ready without V (V was unloaded, a newer one serves), else
    server_unavailable: the server is draining (SIGTERM unloads every version) or a replica behind the
    same address (a proxy) serves V.
    """
    try:
        if await endpoint.client.is_model_ready(model, version) or not await endpoint.client.is_model_ready(
            model
        ):
            return Reason.SERVER_UNAVAILABLE
        return Reason.VERSION_UNAVAILABLE
    except InferenceServerException:  # gone meanwhile: reconnecting finds another replica or the new one
        return Reason.SERVER_UNAVAILABLE


def grpc_channel(address: str, tls: ClientTls | None) -> grpcclient.InferenceServerClient:
    """An asyncio tritonclient to one server: radserve's message size limits, TLS when given.

    Args:
        address: The server's gRPC ``HOST:PORT``.
        tls: TLS to it (mutual with a client certificate); None for plaintext.

    Returns:
        The client (close it with ``await client.close()``).
    """
    size = SETTINGS.client.grpc_max_message_bytes
    options = [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]
    secure: dict[str, Any] = {"ssl": True, **tls.credentials()} if tls else {}
    return grpcclient.InferenceServerClient(address, channel_args=options, **secure)


def _prediction(
    result: Any, pinned: str, url: str, latency: float, attempts: int, extra_outputs: Sequence[str]
) -> Prediction:
    version = result.get_response().model_version
    if pinned and version != pinned:
        raise InferenceError(
            f"{url}: version {version} answered a request pinned to version {pinned}", Reason.VERSION_MISMATCH
        )
    extra = {name: result.as_numpy(name) for name in extra_outputs}
    probabilities = result.as_numpy(OUTPUT_NAME)  # None when not asked for (a detector)
    if probabilities is None:
        probabilities = np.zeros((0,), np.float32)
    return Prediction(probabilities, latency, attempts, version, extra)
