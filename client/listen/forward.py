"""Forward SR documents to a DICOM destination by C-STORE (the listener as a Storage SCU).

What counts as stored follows PS3.4 Annex B.2.3: success (0x0000) and the warning statuses
(0xB000 coercion of data elements, 0xB006 elements discarded, 0xB007 data set does not match SOP
class) all mean the destination kept the document, so it leaves the folder. Anything else (a
failure status, no answer, an association that is refused or breaks, a destination that does not
accept Comprehensive SR) is a failed attempt: the SR is tried again after a doubling delay, and after
``attempts`` failures it moves to ``dead-letter/`` inside the folder, with a log line and a metric,
for someone to look at. No exception of one SR or one destination ends forwarding
(docs/how-to/listen.md, "Forwarding").
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.status import code_to_category

from radserve.client.listen.audit import AuditLog
from radserve.client.listen.listen_metrics import ListenerMetrics
from radserve.client.listen.scp import AssociationLimits
from radserve.client.ownership import sync_folder
from radserve.errors import ConfigurationError
from radserve.settings import SETTINGS

__all__ = ["DEAD_LETTER", "Destination", "ReportForwarder", "is_stored"]

LOGGER = logging.getLogger(__name__)

DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Destination:
    """A remote Storage SCP: ``AE_TITLE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Read ``AE_TITLE@HOST:PORT``.

        Raises:
            ConfigurationError: ``text`` is not of that form.
        """
        title, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        if not title or not host or not port.isdigit():
            raise ConfigurationError(f"report destination {text!r} is not AE_TITLE@HOST:PORT")
        return cls(title, host, int(port))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def is_stored(status: int) -> bool:
    """Whether a C-STORE status means the destination kept the instance (success or a warning).

    Args:
        status: the (0000,0900) Status of the C-STORE response.

    Returns:
        True for 0x0000 and the warning statuses (PS3.4 B.2.3: 0xB000, 0xB006, 0xB007).
    """
    return code_to_category(status) in ("Success", "Warning")


class ReportForwarder:
    """Sends the SRs of ``folder`` to ``destination``; call :meth:`forward_due` now and then.

    Args:
        folder: where the listener writes SRs (``*.dcm``); ``dead-letter/`` is made inside it.
        destination: the Storage SCP.
        calling_ae_title: the listener's AE title.
        metrics: where forwarding state is counted.
        limits: timeouts (and PDU size) of the association.
        ssl_context: DICOM over TLS to the destination (a client context), or None.
        attempts: failed attempts before an SR moves to the dead-letter folder.
        initial_seconds: delay before the first retry of an SR; doubles up to ``max_seconds``.
        max_seconds: longest delay between two tries of one SR.
        audit: where each attempt is recorded (destination, SR, status, outcome).
    """

    def __init__(
        self,
        folder: Path,
        destination: Destination,
        calling_ae_title: str,
        metrics: ListenerMetrics,
        *,
        limits: AssociationLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        attempts: int = SETTINGS.listen.report_attempts,
        initial_seconds: float = SETTINGS.listen.report_retry_initial_seconds,
        max_seconds: float = SETTINGS.listen.report_retry_max_seconds,
        audit: AuditLog | None = None,
    ) -> None:
        self.folder = folder
        self.destination = destination
        self.calling_ae_title = calling_ae_title
        self.metrics = metrics
        self.limits = limits or AssociationLimits()
        self.ssl_context = ssl_context
        self.attempts = attempts
        self.initial_seconds, self.max_seconds = initial_seconds, max_seconds
        self.dead_letter_folder = folder / DEAD_LETTER
        self.audit = audit or AuditLog(None)
        self._failures: dict[str, int] = {}
        self._due: dict[str, float] = {}

    def run_until(self, stop: threading.Event, interval: float) -> None:
        """Every ``interval`` seconds, and once more when ``stop`` is set: send the SRs that are due."""
        stopping = False
        while not stopping:
            stopping = stop.wait(interval)
            self.forward_due()

    def forward_due(self) -> None:
        """Send, over one association, every SR whose next try is due; never raises."""
        now = time.monotonic()
        try:
            waiting = sorted(self.folder.glob("*.dcm"))
        except OSError as error:
            LOGGER.warning("cannot list the reports in %s: %s", self.folder, error)
            return
        reports = [path for path in waiting if self._due.get(path.name, 0.0) <= now]
        if reports:
            try:
                self._send(reports)
            except Exception as error:  # association level (refused, TLS, network): each SR failed once
                self.metrics.report_destination_up.set(0)
                LOGGER.warning("report destination %s: %s: %s", self.destination, type(error).__name__, error)
                for report in reports:
                    if report.exists():
                        self._failed(report, f"{type(error).__name__}: {error}")
        self.metrics.reports_pending.set(sum(1 for path in waiting if path.exists()))

    def _send(self, reports: list[Path]) -> None:
        ae = AE(ae_title=self.calling_ae_title)
        self.limits.apply(ae)
        ae.add_requested_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls = (self.ssl_context, self.destination.host) if self.ssl_context is not None else None
        association = ae.associate(
            self.destination.host, self.destination.port, ae_title=self.destination.ae_title, tls_args=tls
        )
        if not association.is_established:
            self.metrics.report_destination_up.set(0)
            why = "rejected the association" if association.is_rejected else "unreachable or aborted"
            for report in reports:
                self._failed(report, why)
            return
        self.metrics.report_destination_up.set(1)
        try:
            for report in reports:
                if not association.is_established:  # aborted by the peer during this pass
                    self._failed(report, "association aborted")
                    continue
                try:
                    answer = association.send_c_store(report)
                except Exception as error:  # e.g. ValueError: the destination refused the SR class
                    self._failed(report, f"{type(error).__name__}: {error}")
                    continue
                status = int(answer.Status) if answer and "Status" in answer else None
                if status is not None and is_stored(status):
                    self._stored(report, status)
                else:
                    self._failed(report, "no answer" if status is None else f"status 0x{status:04X}")
        finally:
            if association.is_established:
                association.release()

    def _stored(self, report: Path, status: int) -> None:
        if status:
            LOGGER.info("%s stored %s with warning 0x%04X", self.destination, report.name, status)
        report.unlink(missing_ok=True)
        self._failures.pop(report.name, None)
        self._due.pop(report.name, None)
        self.metrics.reports_sent.labels("ok").inc()
        self._audit(report, f"0x{status:04X}", "stored")

    def _audit(self, report: Path, status: str, outcome: str) -> None:
        self.audit.record(
            "report", destination=str(self.destination), report=report.name, status=status, outcome=outcome
        )

    def _failed(self, report: Path, why: str) -> None:
        failures = self._failures[report.name] = self._failures.get(report.name, 0) + 1
        self.metrics.reports_sent.labels("failed").inc()
        self._audit(report, why, "retry" if failures < self.attempts else "dead_letter")
        if failures < self.attempts:
            delay = min(self.initial_seconds * 2 ** (failures - 1), self.max_seconds)
            self._due[report.name] = time.monotonic() + delay
            LOGGER.warning(
                "report destination %s did not store %s (%s): try %d of %d in %.0f s",
                self.destination, report.name, why, failures + 1, self.attempts, delay,
            )  # fmt: skip
            return
        try:
            self.dead_letter_folder.mkdir(mode=0o700, exist_ok=True)
            os.replace(report, self.dead_letter_folder / report.name)
            sync_folder(self.dead_letter_folder)
        except OSError as error:
            LOGGER.error("cannot move %s to %s: %s", report, self.dead_letter_folder, error)
            return
        self._failures.pop(report.name, None)
        self._due.pop(report.name, None)
        self.metrics.reports_dead_lettered.inc()
        LOGGER.error(
            "report destination %s did not store %s after %d attempts (%s): moved to %s",
            self.destination, report.name, failures, why, self.dead_letter_folder,
        )  # fmt: skip
