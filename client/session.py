"""One long-lived client session under every verb: what a run needs is started once, not per call.

A :class:`Session` owns the decode workers (:mod:`.decode_pool`: a crashed worker is replaced), the gRPC
channels to one or more servers (:mod:`.grpc_client`), the served card and the version requests are
pinned to, the request packer (:mod:`.packing`) and the detector served next to the classifier
(:mod:`.detection`). Each :meth:`Session.classify` call streams rows through them, as
``httpx.AsyncClient`` reuses its connection pool across requests; :func:`radserve.client.classify` is a
session of one call (docs/design.md, "Client session"). MRI studies (:meth:`Session.classify_studies`)
travel through the same packer and row builder, so their rows keep the card's decision, the OOD flag and
the failure's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from radserve.client.detection import Detector, find_detector
from radserve.client.flow import PreparedFile, PreparedRadiograph, classify_prepared
from radserve.client.grpc_client import AsyncRadiographClient
from radserve.client.mri_series import StudyError, read_slices, study_tensors
from radserve.client.options import ClassifyOptions, RunSummary
from radserve.client.packing import RequestPacker
from radserve.client.preparers import Preparers
from radserve.client.results import ResultRow
from radserve.client.rows import error_row
from radserve.client.run_metrics import ClientMetrics
from radserve.errors import InputError, ModelCardError
from radserve.model_card import InputContract, ModelCard
from radserve.reasons import Reason
from radserve.routing import ROUTER_OUTPUTS, RouterCard

__all__ = ["Run", "Session"]

PathLike = str | os.PathLike[str]
Files = Iterable[PathLike] | AsyncIterable[PathLike]


class Session:
    """A client of one served model, started once and used for any number of runs.

    Use as ``async with Session(model, options) as session:`` then ``async for rows in
    session.classify(files)``. Entering waits until some server has ``model`` ready, reads its card
    (requests are pinned to the version it describes; a ``version_unavailable`` answer makes the
    session read the card again for the files after it), starts the decode workers and finds the
    detector served next to a classifier. Runs may overlap; they share the in-flight limit.

    Args:
        model: a classifier, a router (:mod:`radserve.routing`) or a study-level model (MRI).
        options: how to connect and decode; every default comes from ``radserve.settings``.

    Raises:
        ServerError: on entering, when no server has ``model`` ready in time.
        DecodeWorkersError: on entering, when the decode workers cannot start.
        ModelCardError: on entering, when a detector served next to ``model`` does not fit it.
    """

    def __init__(self, model: str, options: ClassifyOptions | None = None) -> None:
        self.model = model
        self.options = options or ClassifyOptions()
        self.metrics = self.options.metrics or ClientMetrics()
        self._stack = contextlib.AsyncExitStack()
        self._client: AsyncRadiographClient | None = None
        self._card: ModelCard | RouterCard | None = None
        self._generation = 0  # how often the card was read again
        self._renewing = asyncio.Lock()
        self._preparers: Preparers | None = None
        self._detector: Detector | None = None
        self._packer: RequestPacker | None = None

    @property
    def card(self) -> ModelCard | RouterCard:
        """The served card (a router's routing description for a router)."""
        if self._card is None:
            raise RuntimeError("the session is not open: use `async with Session(...)`")
        return self._card

    @property
    def takes_studies(self) -> bool:
        """Whether the model classifies studies (several channels) rather than radiographs."""
        return not isinstance(self.card, RouterCard) and self.card.channels != 1

    async def __aenter__(self) -> Session:
        options, stack = self.options, self._stack
        self.metrics.model(self.model)
        if options.decode == "gpu":  # a problem of this host is reported before any server is asked
            from radserve.client.gpu_prepare import require_gpu_decoding

            await asyncio.to_thread(require_gpu_decoding)
        try:
            client = AsyncRadiographClient.connect(
                options.connection, max_in_flight=options.max_in_flight, budget=options.budget
            )
            self._client = await stack.enter_async_context(client)
            await client.wait_ready(self.model, options.ready_timeout_seconds)
            self._card = await self._read_card()
            router = isinstance(self._card, RouterCard)
            if not self.takes_studies:  # a study is built in this process: no decode workers needed
                preparers = Preparers(
                    options.decode, options.workers, options.decode_worker_imports, self.metrics, self.model,
                    options.hide_paths,
                )  # fmt: skip
                self._preparers = await stack.enter_async_context(preparers)
            if not router and not self.takes_studies:
                assert isinstance(self._card, ModelCard)
                self._detector = await find_detector(
                    client, self.model, self._card, options.ready_timeout_seconds
                )
            packer = RequestPacker(
                client,
                self.model,
                images_per_request=options.images_per_request,
                max_in_flight=options.max_in_flight,
                metrics=self.metrics,
                extra_outputs=ROUTER_OUTPUTS if router else (),
            )
            self._packer = await stack.enter_async_context(packer)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _read_card(self) -> ModelCard | RouterCard:
        assert self._client is not None
        card = await self._client.served_card(self.model)
        if self.options.accept_any and isinstance(card, ModelCard):
            card = card.replace(accepts=InputContract.any())
        return card

    async def _renew(self, generation: int) -> None:
        """Read the card again (a newer version replaced the pinned one), once per stale generation."""
        async with self._renewing:
            if generation == self._generation:
                self._card = await self._read_card()
                self._generation += 1

    def classify(self, files: Files) -> Run:
        """Classify ``files`` (DICOM file paths, or an async iterable of them, read as the run goes).

        Args:
            files: the files; an iterable is read lazily, at most ``2 x max_in_flight`` files ahead.

        Returns:
            A :class:`Run`: ``async for rows in run`` gives each file's rows (one per frame, or one
            error row) as soon as they are all known; ``run.summary`` counts them.

        Raises:
            ModelCardError: when the model takes studies (use :meth:`classify_studies`).
        """
        card = self.card
        if isinstance(card, ModelCard) and self.takes_studies:
            raise ModelCardError(
                f"model {self.model!r} takes {card.channels}-channel studies: use classify-series"
            )
        return Run(self, files)

    async def _file_rows(self, path: PathLike) -> list[ResultRow]:
        """The rows of one file: prepared by a decode worker, sent by the packer, built into rows."""
        assert self._preparers is not None and self._packer is not None
        options, metrics = self.options, self.metrics
        submitted = time.monotonic()
        card, generation = self.card, self._generation
        prepared = await self._preparers.prepare(str(path), card)
        if not prepared.error_reason:
            metrics.preprocess_seconds.labels(self.model).observe(prepared.seconds)
        rows = await classify_prepared(prepared, self.model, card, self._packer, self._detector)
        if options.accept_any:
            rows = [replace(row, accept_any=True) for row in rows]
        if options.sr_dir is not None:
            rows = await asyncio.to_thread(_with_reports, rows, card, options.sr_dir, options.gsps)
        self._observe(rows, submitted)
        if any(row.error_reason == Reason.VERSION_UNAVAILABLE for row in rows):
            await self._renew(generation)
        return rows

    def _observe(self, rows: list[ResultRow], submitted: float) -> None:
        for row in rows:
            self.metrics.observe_row(self.model, row.status, row.error_reason, time.monotonic() - submitted)

    async def classify_studies(
        self, files: Iterable[PathLike], lesion_index: int | None = None
    ) -> list[ResultRow]:
        """Classify the MRI studies among ``files``: one row per study, one per unreadable file.

        Args:
            files: DICOM slices in any order; they are grouped by StudyInstanceUID.
            lesion_index: the lesion slice along the T1W slice normal (default: the central slice).

        Returns:
            The error rows of unreadable files, then per study a ``not_accepted`` row for each slice
            outside the card's contract and one row keyed by StudyInstanceUID: the prediction with the
            card's decision and OOD flag, the reason (study or request) it failed, or the refusal when
            no slice was accepted.

        Raises:
            ModelCardError: when the model takes single radiographs (use :meth:`classify`).
        """
        if not self.takes_studies:
            raise ModelCardError(f"model {self.model!r} takes single radiographs: use classify")
        assert self._packer is not None
        card, packer = self.card, self._packer
        assert isinstance(card, ModelCard)
        slices, errors = await asyncio.to_thread(read_slices, [str(path) for path in files])
        studies = await asyncio.to_thread(lambda: list(study_tensors(slices, card, self.model, lesion_index)))

        async def study_rows(
            where: str, study: str, tensor: np.ndarray[Any, Any] | StudyError | None, refused: list[ResultRow]
        ) -> list[ResultRow]:
            if tensor is None:  # no slice inside the contract: the study's one row is the first refusal
                return [replace(refused[0], path=where, sop_instance_uid="")]
            submitted = time.monotonic()
            if isinstance(tensor, StudyError):
                rows = [error_row(where, self.model, tensor.reason, str(tensor))]
            else:
                prepared = PreparedFile(where, (PreparedRadiograph("", None, tensor),))
                rows = await classify_prepared(prepared, self.model, card, packer)
            self._observe(rows, submitted)
            return [*refused, replace(rows[0], study_instance_uid=study)]

        answered = await asyncio.gather(*(study_rows(*study) for study in studies))
        return errors + [row for rows in answered for row in rows]


class Run:
    """The rows of one :meth:`Session.classify` call: an async iterator of each file's rows.

    Files are taken from the input as workers free up, so at most ``2 x max_in_flight`` files are
    under way (a file whose rows were yielded is no longer under way once the loop asks for the
    next). ``summary`` holds the counts so far, and the run's wall time once it ends.
    """

    def __init__(self, session: Session, files: Files) -> None:
        self.summary = RunSummary()
        self._session = session
        self._files = files

    def __aiter__(self) -> AsyncGenerator[list[ResultRow], None]:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[list[ResultRow], None]:
        started = time.monotonic()
        source = _aiter(self._files)
        reading = asyncio.Lock()  # an async iterator serves one reader at a time
        done: asyncio.Queue[tuple[list[ResultRow], asyncio.Future[None]] | BaseException | None]
        done = asyncio.Queue()

        async def worker() -> None:
            while True:
                async with reading:
                    try:
                        path = await anext(source)
                    except StopAsyncIteration:
                        return
                self.summary.files += 1
                rows = await self._session._file_rows(path)
                for each in rows:
                    self.summary.count(each)
                taken = asyncio.get_running_loop().create_future()
                done.put_nowait((rows, taken))
                await taken  # the caller has the rows: take the next file

        async def supervise(workers: list[asyncio.Task[None]]) -> None:
            try:
                await asyncio.gather(*workers)
            except Exception as error:  # re-raised in the caller's loop below
                done.put_nowait(error)
            else:
                done.put_nowait(None)

        # Up to max_in_flight radiographs on the wire and as many prepared or being prepared, so
        # that the next request can be packed when slots free; each file holds only its wire
        # images (decoded pixels stay in the workers).
        workers = [asyncio.create_task(worker()) for _ in range(2 * self._session.options.max_in_flight)]
        supervisor = asyncio.create_task(supervise(workers))
        try:
            while (item := await done.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                rows, taken = item
                yield rows
                taken.set_result(None)
        finally:
            for task in (*workers, supervisor):
                task.cancel()
            await asyncio.gather(*workers, supervisor, return_exceptions=True)
            self.summary.seconds = time.monotonic() - started


async def _aiter(files: Files) -> AsyncIterator[PathLike]:
    if isinstance(files, AsyncIterable):
        async for path in files:
            yield path
    else:
        for path in files:
            yield path


def _with_reports(
    rows: list[ResultRow], card: ModelCard | RouterCard, folder: Path, gsps: bool = False
) -> list[ResultRow]:
    """Write an SR per classified row, and with ``gsps`` a presentation state of its boxes.

    A row whose SR cannot be written becomes an error row. A router's row is reported by the card of
    the stage that answered it, with the first stage's finding.
    """
    from radserve.client.gsps import write_boxes_gsps  # highdicom: only when asked
    from radserve.client.sr import read_source_header, write_classification_sr

    stages = {}
    if isinstance(card, RouterCard):
        stages = {stage.model: stage for stage in (card.first, *card.downstream)}
    header = None
    written = []
    for row in rows:
        if row.status == "ok":
            try:
                header = header or read_source_header(Path(row.path))
                answered = stages[row.model].card if stages else card
                assert isinstance(answered, ModelCard)  # a router's row is answered by one of its stages
                first = stages[row.first_stage_model].card if row.routed else None
                write_classification_sr(
                    row, answered, header, folder, model_version=row.model_version, first_stage=first
                )
                if gsps and row.boxes:
                    write_boxes_gsps(row, answered, header, folder, model_version=row.model_version)
            except InputError as error:
                row = replace(row, status="error", error_reason=error.reason, error=str(error))
        written.append(row)
    return written
