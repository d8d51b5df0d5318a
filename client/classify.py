"""The classify runner: the flow (:mod:`.flow`) over many files, with the stream kept full.

Decode workers prepare files while earlier ones are on the wire; radiographs ready together share
a request. Every file yields either one row per radiograph (frame) or one error row; nothing is
skipped, and at most ``2 x max_in_flight`` files are under way at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from radserve.client.detection import find_detector
from radserve.client.flow import classify_prepared
from radserve.client.grpc_client import AsyncRadiographClient, RetryBudget, RetryPolicy
from radserve.client.metrics import ClientMetrics
from radserve.client.packing import RequestPacker
from radserve.client.preparers import Decode, Preparers
from radserve.client.results import ResultRow
from radserve.errors import InputError, ModelCardError
from radserve.model_card import InputContract, ModelCard
from radserve.routing import ROUTER_OUTPUTS, RouterCard
from radserve.security import ClientTls
from radserve.settings import SETTINGS


@dataclass
class RunSummary:
    """Counts of a run; ``radiographs_per_second`` counts successful radiographs over wall time.

    Attributes:
        files: Input files of the run.
        radiographs: Rows with status ``ok``.
        errors: Error rows.
        seconds: Wall time of the run.
        errors_by_reason: Error rows by ``error_reason``.
        not_accepted: Instances outside the model's input contract (not errors).
        not_accepted_by_reason: Those by the attribute refused.
        out_of_distribution: Classified radiographs flagged ``ood``.
    """

    files: int = 0
    radiographs: int = 0
    errors: int = 0
    seconds: float = 0.0
    errors_by_reason: dict[str, int] = field(default_factory=dict)
    not_accepted: int = 0
    not_accepted_by_reason: dict[str, int] = field(default_factory=dict)
    out_of_distribution: int = 0

    @property
    def radiographs_per_second(self) -> float:
        """Radiographs classified per second of wall time (0 before the run has taken any time)."""
        return self.radiographs / self.seconds if self.seconds > 0 else 0.0

    def count(self, row: ResultRow) -> None:
        """Add one row to the counts.

        Args:
            row: A row of the run.
        """
        if row.status == "ok":
            self.radiographs += 1
            self.out_of_distribution += row.ood is True
        elif row.status == "not_accepted":
            self.not_accepted += 1
            reasons = self.not_accepted_by_reason
            reasons[row.error_reason] = reasons.get(row.error_reason, 0) + 1
        else:
            self.errors += 1
            self.errors_by_reason[row.error_reason] = self.errors_by_reason.get(row.error_reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """The counts as a plain dict, ``radiographs_per_second`` included."""
        return asdict(self) | {"radiographs_per_second": self.radiographs_per_second}


@dataclass(frozen=True)
class ClassifyOptions:
    """How a run talks to the servers and decodes; every default comes from ``radserve.settings``.

    Attributes:
        url: ``HOST:PORT`` of the server, or several: replicas, balanced by the client.
        max_in_flight: Radiographs on the wire at once.
        images_per_request: Radiographs packed into one request at most, when ready together.
        workers: Decode worker processes.
        decode: ``cpu`` (worker processes), or ``gpu`` first (nvImageCodec, client/gpu_prepare.py).
        retry: Backoff of transient failures.
        budget: The retry budget; one per run when not given.
        tls: TLS to the servers (mutual with a client certificate).
        admin_key: For servers whose model config is behind the admin key.
        ready_timeout_seconds: How long to wait for the model to be ready.
        sr_dir: Write one DICOM Comprehensive SR per classified radiograph into this folder.
        gsps: With ``sr_dir``: also a Grayscale Softcopy Presentation State of the boxes of every row
            with boxes, beside its SR (radserve.client.gsps).
        metrics: Prometheus series of the run (client/metrics.py); a private registry when not given.
        decode_worker_imports: Modules each decode worker imports before its first file (e.g. a
            site's pydicom decoder plugins).
        accept_any: Research use: classify every instance, whatever the model's input contract
            (recorded in each row).
    """

    url: str | Sequence[str] = SETTINGS.grpc_url
    max_in_flight: int = SETTINGS.client.max_in_flight
    images_per_request: int = SETTINGS.client.images_per_request
    workers: int = SETTINGS.client.decode_workers
    decode: Decode = SETTINGS.client.decode  # type: ignore[assignment]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    budget: RetryBudget | None = None
    tls: ClientTls | None = None
    admin_key: str | None = None
    ready_timeout_seconds: float = SETTINGS.client.ready_timeout_seconds
    sr_dir: Path | None = None
    gsps: bool = False
    metrics: ClientMetrics | None = None
    decode_worker_imports: tuple[str, ...] = ()
    accept_any: bool = False


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


async def classify(
    files: Iterable[Path],
    model: str,
    on_rows: Callable[[list[ResultRow]], None],
    options: ClassifyOptions | None = None,
) -> RunSummary:
    """Classify ``files`` with ``model`` (a classifier, or a router: :mod:`radserve.routing`).

    Args:
        files: DICOM files (use :func:`classify_paths` for folders).
        model: The served model's name.
        on_rows: Gets each file's rows together (one per frame, or one error row) once all are known.
        options: Servers, concurrency, decoding, SR output; every default from ``radserve.settings``.

    Returns:
        The run's counts.

    Raises:
        ServerError: No server has the model ready.
        DecodeWorkersError: The decode workers could not start.
    """
    options = options or ClassifyOptions()
    summary = RunSummary()
    started = time.monotonic()
    pending: Iterator[Path] = iter(files)
    metrics = options.metrics or ClientMetrics()
    metrics.model(model)
    async with (
        Preparers(options.decode, options.workers, options.decode_worker_imports, metrics, model) as decoders,
        AsyncRadiographClient(
            options.url,
            max_in_flight=options.max_in_flight,
            retry=options.retry,
            budget=options.budget,
            tls=options.tls,
            admin_key=options.admin_key,
        ) as client,
    ):
        await client.wait_ready(model, options.ready_timeout_seconds)
        card = await client.served_card(model)
        router = isinstance(card, RouterCard)  # each row is answered (and reported) by one of its stages
        if not router and card.channels != 1:  # a study-level system (MRI): radserve.client.mri_classify
            raise ModelCardError(
                f"model {model!r} takes {card.channels}-channel studies: use classify-series"
            )
        if options.accept_any and not router:
            card = card.replace(accepts=InputContract.any())
        detector = None if router else await find_detector(client, model, card, options.ready_timeout_seconds)
        async with RequestPacker(
            client,
            model,
            images_per_request=options.images_per_request,
            max_in_flight=options.max_in_flight,
            metrics=metrics,
            extra_outputs=ROUTER_OUTPUTS if router else (),
        ) as packer:

            async def worker() -> None:
                for path in pending:
                    summary.files += 1
                    submitted = time.monotonic()
                    prepared = await decoders.prepare(str(path), card)
                    if not prepared.error_reason:
                        metrics.preprocess_seconds.labels(model).observe(prepared.seconds)
                    rows = await classify_prepared(prepared, model, card, packer, detector)
                    if options.accept_any:
                        rows = [replace(row, accept_any=True) for row in rows]
                    if options.sr_dir is not None:
                        rows = await asyncio.to_thread(
                            _with_reports, rows, card, options.sr_dir, options.gsps
                        )
                    for row in rows:
                        summary.count(row)
                        metrics.observe_row(model, row.status, row.error_reason, time.monotonic() - submitted)
                    on_rows(rows)

            # Up to max_in_flight radiographs on the wire and as many prepared or being prepared, so
            # that the next request can be packed when slots free; each file holds only its wire
            # images (decoded pixels stay in the workers).
            await asyncio.gather(*(worker() for _ in range(2 * options.max_in_flight)))
    summary.seconds = time.monotonic() - started
    return summary
