"""Overload that sheds: a full queue ends requests as ``overloaded`` within the retry budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from radserve.client.grpc_client import AsyncRadiographClient, Prediction, RetryBudget, RetryPolicy
from radserve.errors import InferenceError
from radserve.export.model_config import ServingOptions
from radserve.export.pipeline import ExportResult
from radserve.export.repository import publish
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_metrics import ModelCounters, model_counters
from radserve.settings import SETTINGS

CLIENTS, IN_FLIGHT, QUEUE = 64, 8, 8


def _settled(read: Callable[[], ModelCounters], requests: float, seconds: float = 10.0) -> ModelCounters:
    """Triton's counters once they reach ``requests`` (they trail the responses a little), or at the
    deadline: the caller asserts on what they say."""
    deadline = time.monotonic() + seconds
    counted = read()
    while counted.requests < requests and time.monotonic() < deadline:
        time.sleep(0.1)
        counted = read()
    return counted


def test_overload_sheds_within_the_retry_budget(tiny_export: ExportResult, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    options = ServingOptions(batching=replace(SETTINGS.batching, max_queue_size=QUEUE), warmup=False)
    card = tiny_export.card.replace(name="shed")
    publish(repository, card, tiny_export.version_dir / "model.onnx", options=options)
    image = np.zeros((1, 1, *card.input_size), np.uint8)
    budget = RetryBudget()  # one budget for the whole process, as a deployment would share it
    policy = RetryPolicy(initial_backoff_seconds=0.02, max_backoff_seconds=0.2, give_up_after_seconds=30)

    async def client_run(url: str) -> list[Prediction | BaseException]:
        async with AsyncRadiographClient(url, max_in_flight=IN_FLIGHT, retry=policy, budget=budget) as client:
            await client.model_card("shed")
            requests = (client.infer("shed", image) for _ in range(IN_FLIGHT))
            return await asyncio.gather(*requests, return_exceptions=True)

    async def everyone(url: str) -> list[Prediction | BaseException]:
        runs = await asyncio.gather(*(client_run(url) for _ in range(CLIENTS)))
        return [outcome for run in runs for outcome in run]

    with TritonServer(repository, ports=free_ports()) as server:
        before = model_counters(server.metrics_url, "shed")
        outcomes = asyncio.run(everyone(server.grpc_url))
        served = sum(isinstance(outcome, Prediction) for outcome in outcomes)
        counted = _settled(lambda: model_counters(server.metrics_url, "shed") - before, served)
        after = asyncio.run(client_run(server.grpc_url))
    inputs = CLIENTS * IN_FLIGHT
    ok = [outcome for outcome in outcomes if isinstance(outcome, Prediction)]
    shed = [o for o in outcomes if isinstance(o, InferenceError) and o.reason == "overloaded"]
    assert len(ok) + len(shed) == len(outcomes) == inputs, {type(o).__name__: str(o) for o in outcomes}
    assert ok and shed, (len(ok), len(shed))  # the queue really overflowed, and it still served
    assert any(isinstance(outcome, Prediction) for outcome in after)  # the server keeps serving
    # Triton 2.51 does not count requests its full queue rejects (nv_inference_request_failure
    # {reason="REJECTED"} stays 0): what it served it counts, once per ok row; what was sent in
    # all is the attempts each outcome reports.
    assert counted.requests == len(ok) and counted.failures == 0
    sent = sum(outcome.attempts for outcome in ok + shed)
    assert sent == inputs + budget.retries
    assert budget.retries <= budget.burst + budget.ratio * budget.requests
    assert sent <= inputs * (1 + SETTINGS.client.retry_budget_ratio) + SETTINGS.client.retry_budget_burst


def test_a_backing_off_request_frees_its_in_flight_slot() -> None:
    """One slot, two requests to a server that is down: the second is tried while the first waits."""
    policy = RetryPolicy(initial_backoff_seconds=0.4, max_backoff_seconds=0.4, give_up_after_seconds=1.5)
    image = np.zeros((1, 1, 16, 16), np.uint8)

    async def run() -> list[float]:
        async with AsyncRadiographClient(
            f"127.0.0.1:{free_ports().grpc}", max_in_flight=1, retry=policy
        ) as client:

            async def attempt() -> float:
                with pytest.raises(InferenceError) as failure:
                    await client.infer("tiny", image)
                assert failure.value.reason == "server_unavailable"
                return time.monotonic()

            started = time.monotonic()
            return [end - started for end in await asyncio.gather(attempt(), attempt())]

    first, second = asyncio.run(run())
    # holding the slot while backing off would start the second only after the first gave up
    assert abs(second - first) < policy.give_up_after_seconds / 2, (first, second)


def test_retry_budget_bounds_retries_to_its_ratio() -> None:
    budget = RetryBudget(ratio=0.1, burst=5)
    granted = 0
    for _ in range(1000):
        budget.sent()
        granted += budget.try_spend() + budget.try_spend()  # every request wants two retries
    assert granted == budget.retries <= 5 + 0.1 * 1000
    assert granted >= 0.1 * 1000  # and the budget is really spent, not refused outright
