"""What a listener is told: :class:`ListenOptions` (every default from ``radserve.settings``)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from radserve.client.listen.forward import Destination
from radserve.client.listen.scp import AssociationLimits
from radserve.client.options import ClassifyOptions
from radserve.client.privacy import Pseudonyms
from radserve.settings import SETTINGS

__all__ = ["ListenOptions"]


@dataclass(frozen=True)
class ListenOptions:
    model: str
    output: Path  # results file, .jsonl or .csv (appended to)
    spool: Path = Path(SETTINGS.listen.spool)
    host: str = SETTINGS.host
    port: int = SETTINGS.listen.port  # 0 picks a free one (see Listener.port)
    ae_title: str = SETTINGS.listen.ae_title
    max_queue: int = SETTINGS.listen.max_queue
    allowed_calling: Sequence[str] = ()  # calling AE titles admitted; empty: any
    limits: AssociationLimits = field(default_factory=AssociationLimits)
    spool_max_bytes: int = SETTINGS.listen.spool_max_bytes  # beyond, C-STORE answers 0xA700
    ssl_context: ssl.SSLContext | None = None  # DICOM over TLS
    # How rows are made: the classify runner's options (url, in-flight, workers, sr_dir, ...).
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    # Forward each SR to this Storage SCP (they are written to classify.sr_dir first).
    report_destination: Destination | None = None
    report_ssl_context: ssl.SSLContext | None = None  # DICOM over TLS to the report destination
    retry_initial_seconds: float = SETTINGS.listen.retry_initial_seconds
    retry_max_seconds: float = SETTINGS.listen.retry_max_seconds
    max_failures: int = SETTINGS.listen.max_failures
    audit_log: Path | None = None  # ATNA-style JSON lines: associations and SR forwarding
    pseudonyms: Pseudonyms = field(default_factory=Pseudonyms)  # what the rows hide (paths, UIDs)
    # A study-level model: MR Image Storage negotiated, instances grouped by Study Instance UID and a
    # study classified once none of it arrived for study_quiet_seconds (client/listen/studies.py).
    studies: bool = False
    study_quiet_seconds: float = SETTINGS.listen.study_quiet_seconds
