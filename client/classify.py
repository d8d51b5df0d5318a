"""Classify files: decode in worker processes, keep the gRPC stream full, one row per input.

Every file yields either one row per radiograph (frame) or one error row; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.dicom import read_radiographs
from client.errors import InferenceError, InputError
from client.grpc_client import AsyncRadiographClient, RetryPolicy
from client.model_card import ModelCard
from client.preprocess import model_input
from client.results import ResultRow
from server_config.settings import SETTINGS

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedRadiograph:
    sop_instance_uid: str
    frame: int | None
    image: np.ndarray


@dataclass(frozen=True)
class PreparedFile:
    """A file turned into wire images, or the reason it could not be (errors travel as values)."""

    path: str
    radiographs: tuple[PreparedRadiograph, ...] = ()
    error_reason: str = ""
    error: str = ""


def prepare_file(path: str, card: ModelCard) -> PreparedFile:
    """Decode, display-process and resize every frame of ``path`` (runs in a worker process)."""
    try:
        radiographs = read_radiographs(path)
    except InputError as error:
        return PreparedFile(path, error_reason=error.reason, error=str(error))
    except Exception as error:  # a worker must answer for every file, whatever broke
        LOGGER.exception("unexpected failure on %s", path)
        return PreparedFile(
            path, error_reason="internal_error", error=f"{path}: {type(error).__name__}: {error}"
        )
    return PreparedFile(
        path,
        tuple(PreparedRadiograph(r.sop_instance_uid, r.frame, model_input(r, card)) for r in radiographs),
    )


@dataclass
class RunSummary:
    """Counts of a run; ``radiographs_per_second`` counts successful radiographs over wall time."""

    files: int = 0
    radiographs: int = 0
    errors: int = 0
    seconds: float = 0.0
    errors_by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def radiographs_per_second(self) -> float:
        return self.radiographs / self.seconds if self.seconds > 0 else 0.0

    def count(self, row: ResultRow) -> None:
        if row.status == "ok":
            self.radiographs += 1
        else:
            self.errors += 1
            self.errors_by_reason[row.error_reason] = self.errors_by_reason.get(row.error_reason, 0) + 1


@dataclass(frozen=True)
class ClassifyOptions:
    url: str = SETTINGS.grpc_url
    max_in_flight: int = SETTINGS.client_max_in_flight
    workers: int = SETTINGS.client_decode_workers
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ready_timeout_seconds: float = 30.0


def _prediction_row(
    path: str,
    item: PreparedRadiograph,
    model: str,
    card: ModelCard,
    probabilities: np.ndarray,
    latency: float,
) -> ResultRow:
    best = int(np.argmax(probabilities))
    return ResultRow(
        path=path,
        status="ok",
        sop_instance_uid=item.sop_instance_uid,
        frame=item.frame,
        model=model,
        label=card.labels[best],
        score=round(float(probabilities[best]), 6),
        probabilities={
            label: round(float(p), 6) for label, p in zip(card.labels, probabilities, strict=True)
        },
        latency_ms=round(latency * 1000, 3),
    )


async def classify(
    files: Iterable[Path],
    model: str,
    on_row: Callable[[ResultRow], None],
    options: ClassifyOptions | None = None,
) -> RunSummary:
    """Classify ``files`` with ``model``; ``on_row`` receives every row as soon as it is known."""
    options = options or ClassifyOptions()
    summary = RunSummary()
    started = time.monotonic()
    pending: Iterator[Path] = iter(files)
    loop = asyncio.get_running_loop()

    def emit(row: ResultRow) -> None:
        summary.count(row)
        on_row(row)

    # forkserver: never fork a process that already runs gRPC's threads.
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(options.workers, mp_context=context) as executor:
        async with AsyncRadiographClient(
            options.url, max_in_flight=options.max_in_flight, retry=options.retry
        ) as client:
            await client.wait_ready(model, options.ready_timeout_seconds)
            card = await client.model_card(model)

            async def infer(path: str, item: PreparedRadiograph) -> None:
                try:
                    prediction = await client.infer(model, item.image[np.newaxis])
                except InferenceError as error:
                    emit(
                        ResultRow(
                            path,
                            "error",
                            item.sop_instance_uid,
                            item.frame,
                            model,
                            error_reason="inference_failed",
                            error=f"{path}: {error}",
                        )
                    )
                    return
                emit(
                    _prediction_row(
                        path, item, model, card, prediction.probabilities[0], prediction.latency_seconds
                    )
                )

            async def worker() -> None:
                for path in pending:
                    summary.files += 1
                    prepared = await loop.run_in_executor(executor, prepare_file, str(path), card)
                    if prepared.error_reason:
                        emit(
                            ResultRow(
                                prepared.path,
                                "error",
                                model=model,
                                error_reason=prepared.error_reason,
                                error=prepared.error,
                            )
                        )
                        continue
                    await asyncio.gather(*(infer(prepared.path, item) for item in prepared.radiographs))

            await asyncio.gather(*(worker() for _ in range(options.max_in_flight)))
    summary.seconds = time.monotonic() - started
    return summary
