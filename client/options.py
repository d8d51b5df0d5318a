"""What a classify run is told (:class:`ClassifyOptions`) and what it counts (:class:`RunSummary`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from radserve.client.grpc_client import ConnectionOptions, RetryBudget, RetryPolicy
from radserve.client.preparers import Decode
from radserve.client.results import ResultRow
from radserve.client.run_metrics import ClientMetrics
from radserve.settings import SETTINGS
from radserve.transport import ClientTls

__all__ = ["ClassifyOptions", "RunSummary"]


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
        metrics: Prometheus series of the run (client/run_metrics.py); a private registry when not given.
        decode_worker_imports: Modules each decode worker imports before its first file (e.g. a
            site's pydicom decoder plugins).
        accept_any: Research use: classify every instance, whatever the model's input contract
            (recorded in each row).
        hide_paths: Rewrites what decode workers write to stderr, e.g.
            :meth:`radserve.client.privacy.PathPseudonyms.hide` (``--pseudonymize-paths``).
    """

    url: str | Sequence[str] = SETTINGS.grpc_url
    max_in_flight: int = SETTINGS.client.max_in_flight
    images_per_request: int = SETTINGS.client.images_per_request
    workers: int = SETTINGS.client.decode_workers
    decode: Decode = SETTINGS.client.decode  # type: ignore[assignment]  # a str setting: Preparers refuses others
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
    hide_paths: Callable[[str], str] | None = None

    @property
    def connection(self) -> ConnectionOptions:
        """The connection part of these options (URLs, TLS, admin key, retry policy, ready timeout)."""
        return ConnectionOptions(self.url, self.tls, self.admin_key, self.retry, self.ready_timeout_seconds)

    def with_connection(self, connection: ConnectionOptions) -> ClassifyOptions:
        """These options with the connection part taken from ``connection``.

        Args:
            connection: The URLs, TLS, admin key, retry policy and ready timeout to use.

        Returns:
            A copy of these options.
        """
        return replace(
            self,
            url=connection.urls,
            tls=connection.tls,
            admin_key=connection.admin_key,
            retry=connection.retry,
            ready_timeout_seconds=connection.ready_timeout_seconds,
        )
