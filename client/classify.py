"""Classify files: decode in worker processes, keep the gRPC stream full, one row per input.

Every file yields either one row per radiograph (frame) or one error row; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from radserve.client.dicom import read_radiographs
from radserve.client.grpc_client import AsyncRadiographClient, Prediction, RetryPolicy
from radserve.client.metrics import ClientMetrics
from radserve.client.preprocess import model_input
from radserve.client.results import ResultRow
from radserve.client.sr import read_source_header, write_classification_sr
from radserve.errors import InferenceError, InputError, ModelCardError
from radserve.model_card import ModelCard
from radserve.settings import SETTINGS

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
    seconds: float = 0.0  # time the worker spent on the file (radserve_preprocess_seconds)


def prepare_file(path: str, card: ModelCard) -> PreparedFile:
    """Decode, display-process and resize every frame of ``path`` (runs in a worker process)."""
    started = time.perf_counter()
    try:
        radiographs = read_radiographs(path)
    except InputError as error:
        return PreparedFile(path, error_reason=error.reason, error=str(error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # a worker answers for every file, even after a codec's panic
        LOGGER.exception("unexpected failure on %s", path)
        return PreparedFile(
            path, error_reason="internal_error", error=f"{path}: {type(error).__name__}: {error}"
        )
    return PreparedFile(
        path,
        tuple(PreparedRadiograph(r.sop_instance_uid, r.frame, model_input(r, card)) for r in radiographs),
        seconds=time.perf_counter() - started,
    )


class _DecoderPool:
    """Worker processes for :func:`prepare_file` that survive a decoder crashing its process.

    A crash (a codec's segfault) breaks the whole pool and fails every file it held: the pool is
    replaced and each of those files is tried once more on a fresh one before it is reported.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        # forkserver: never fork a process that already runs gRPC's threads.
        self._context = multiprocessing.get_context("forkserver")
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._workers, mp_context=self._context)

    async def prepare(self, path: str, card: ModelCard) -> PreparedFile:
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, prepare_file, path, card)
            except BrokenProcessPool:
                if executor is self._executor:
                    LOGGER.warning("a decoder process died (last file: %s); starting new ones", path)
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._new_executor()
                if attempt:
                    return PreparedFile(
                        path, error_reason="decoder_crashed", error=f"{path}: the decoder process crashed"
                    )
            except Exception as error:  # e.g. a result that cannot travel back from the worker
                return PreparedFile(
                    path, error_reason="internal_error", error=f"{path}: {type(error).__name__}: {error}"
                )
        raise AssertionError("unreachable")

    def __enter__(self) -> _DecoderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


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
    url: str | Sequence[str] = SETTINGS.grpc_url  # several: replicas, balanced by the client
    max_in_flight: int = SETTINGS.client.max_in_flight
    workers: int = SETTINGS.client.decode_workers
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ready_timeout_seconds: float = SETTINGS.client.ready_timeout_seconds
    # Write one DICOM Comprehensive SR per classified radiograph into this folder.
    sr_dir: Path | None = None
    # Prometheus series of the run (client/metrics.py); a private registry when not given.
    metrics: ClientMetrics | None = None


def _prediction_row(
    path: str,
    item: PreparedRadiograph,
    model: str,
    card: ModelCard,
    prediction: Prediction,
) -> ResultRow:
    probabilities = prediction.probabilities[0]
    best = int(np.argmax(probabilities))
    return ResultRow(
        path=path,
        status="ok",
        sop_instance_uid=item.sop_instance_uid,
        frame=item.frame,
        model=model,
        model_version=prediction.model_version,
        label=card.labels[best],
        score=round(float(probabilities[best]), 6),
        probabilities={
            label: round(float(p), 6) for label, p in zip(card.labels, probabilities, strict=True)
        },
        latency_ms=round(prediction.latency_seconds * 1000, 3),
    )


def _with_reports(rows: list[ResultRow], card: ModelCard, folder: Path) -> list[ResultRow]:
    """Write an SR per classified row; a row whose SR cannot be written becomes an error row."""
    header = None
    written = []
    for row in rows:
        if row.status == "ok":
            try:
                header = header or read_source_header(Path(row.path))
                write_classification_sr(row, card, header, folder, model_version=row.model_version)
            except InputError as error:
                row = replace(row, status="error", error_reason=error.reason, error=str(error))
        written.append(row)
    return written


async def classify(
    files: Iterable[Path],
    model: str,
    on_rows: Callable[[list[ResultRow]], None],
    options: ClassifyOptions | None = None,
) -> RunSummary:
    """Classify ``files`` with ``model``.

    ``on_rows`` receives the rows of one file at a time (one per frame, or one error row) as soon
    as they are all known, so a writer can keep a file's rows together.
    """
    options = options or ClassifyOptions()
    summary = RunSummary()
    started = time.monotonic()
    pending: Iterator[Path] = iter(files)
    metrics = options.metrics or ClientMetrics()
    metrics.model(model)

    def emit(rows: list[ResultRow], submitted: float) -> None:
        for row in rows:
            summary.count(row)
            metrics.observe_row(model, row.status, row.error_reason, time.monotonic() - submitted)
        on_rows(rows)

    with _DecoderPool(options.workers) as decoders:
        async with AsyncRadiographClient(
            options.url, max_in_flight=options.max_in_flight, retry=options.retry
        ) as client:
            await client.wait_ready(model, options.ready_timeout_seconds)
            card = await client.model_card(model)
            if card.channels != 1:  # a study-level system (MRI series): radserve.client.mri_classify
                raise ModelCardError(
                    f"model {model!r} takes {card.channels}-channel studies: use classify-series"
                )

            async def infer(path: str, item: PreparedRadiograph) -> ResultRow:
                try:
                    with metrics.in_flight.labels(model).track_inprogress():
                        prediction = await client.infer(model, item.image[np.newaxis])
                except InferenceError as error:
                    return ResultRow(
                        path,
                        "error",
                        item.sop_instance_uid,
                        item.frame,
                        model,
                        error_reason="inference_failed",
                        error=f"{path}: {error}",
                    )
                metrics.request_seconds.labels(model).observe(prediction.latency_seconds)
                return _prediction_row(path, item, model, card, prediction)

            async def worker() -> None:
                for path in pending:
                    summary.files += 1
                    submitted = time.monotonic()
                    prepared = await decoders.prepare(str(path), card)
                    if prepared.error_reason:
                        error = ResultRow(
                            prepared.path,
                            "error",
                            model=model,
                            error_reason=prepared.error_reason,
                            error=prepared.error,
                        )
                        emit([error], submitted)
                        continue
                    metrics.preprocess_seconds.labels(model).observe(prepared.seconds)
                    rows = await asyncio.gather(
                        *(infer(prepared.path, item) for item in prepared.radiographs)
                    )
                    if options.sr_dir is not None:
                        rows = await asyncio.to_thread(_with_reports, rows, card, options.sr_dir)
                    emit(rows, submitted)

            await asyncio.gather(*(worker() for _ in range(options.max_in_flight)))
    summary.seconds = time.monotonic() - started
    return summary
