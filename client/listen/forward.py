"""Forward SR documents to a DICOM destination by C-STORE (the listener as a Storage SCU)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ComprehensiveSRStorage

from radserve.errors import ConfigurationError

__all__ = ["Destination", "send_reports"]

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    """A remote Storage SCP: ``AE_TITLE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        title, _, address = text.partition("@")
        host, _, port = address.rpartition(":")
        if not title or not host or not port.isdigit():
            raise ConfigurationError(f"report destination {text!r} is not AE_TITLE@HOST:PORT")
        return cls(title, host, int(port))


def send_reports(
    folder: Path, destination: Destination, calling_ae_title: str, timeout: float
) -> tuple[int, int]:
    """Send every SR in ``folder`` over one association; remove each one the destination stored.

    Returns (stored, not stored); those not stored stay for the next call.
    """
    reports = sorted(folder.glob("*.dcm"))
    if not reports:
        return 0, 0
    ae = AE(ae_title=calling_ae_title)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = timeout
    ae.add_requested_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not association.is_established:
        LOGGER.warning("report destination %s refused or unreachable", destination)
        return 0, len(reports)
    stored = 0
    try:
        for report in reports:
            status = association.send_c_store(report)
            if status and status.Status == 0x0000:
                report.unlink()
                stored += 1
            else:
                LOGGER.warning("report destination %s did not store %s", destination, report.name)
    finally:
        association.release()
    return stored, len(reports) - stored
