"""The DICOM side of the listener: an Application Entity that takes C-STORE and C-ECHO.

Presentation contexts: CR, DX (for presentation and for processing) and MR Image Storage, each with
the transfer syntaxes radserve decodes (:data:`SUPPORTED_TRANSFER_SYNTAXES`); a context proposed
with none of them is refused with result 0x04 (transfer syntaxes not supported), any other SOP class
with 0x03 (abstract syntax not supported). Verification (C-ECHO) is always supported.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MRImageStorage,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from radserve.client.dicom import SUPPORTED_TRANSFER_SYNTAXES
from radserve.client.listen.metrics import ListenerMetrics

__all__ = ["STORAGE_CLASSES", "accepted_transfer_syntaxes", "start_scp"]

LOGGER = logging.getLogger(__name__)

STORAGE_CLASSES: tuple[str, ...] = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    MRImageStorage,
)

# C-STORE answers (PS3.4 B.2.3): 0xA7xx Refused: Out of Resources, 0xCxxx Error: Cannot Understand.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SPOOL_FAILED = 0xA701
CANNOT_UNDERSTAND = 0xC000

StoreHandler = Callable[[str, bytes], int]
"""Takes (SOP Instance UID, the encoded file with its meta information); answers a C-STORE status."""


def accepted_transfer_syntaxes() -> list[str]:
    """What the listener accepts, uncompressed first (pynetdicom keeps the proposer's preference)."""
    preferred = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return preferred + sorted(SUPPORTED_TRANSFER_SYNTAXES - set(preferred))


def _handlers(store: StoreHandler, metrics: ListenerMetrics) -> list[tuple[evt.EventType, Callable]]:
    def on_store(event: Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID or "")
        try:
            data = event.encoded_dataset()
        except Exception as error:  # an unusable request must never kill the association thread
            LOGGER.warning("C-STORE of %s from %s unusable: %s", uid, event.assoc.requestor.ae_title, error)
            metrics.instances.labels("unreadable").inc()
            return CANNOT_UNDERSTAND
        return store(uid, data)

    return [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_ACCEPTED, lambda event: metrics.associations.labels("accepted").inc()),
        (evt.EVT_REJECTED, lambda event: metrics.associations.labels("rejected").inc()),
        (evt.EVT_ABORTED, lambda event: metrics.associations.labels("aborted").inc()),
    ]


def start_scp(
    address: tuple[str, int],
    ae_title: str,
    store: StoreHandler,
    metrics: ListenerMetrics,
    *,
    allowed_calling: Sequence[str] = (),
    network_timeout: float = 30.0,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Start the Storage SCP in background threads; ``allowed_calling`` empty admits every caller."""
    ae = AE(ae_title=ae_title)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = network_timeout
    syntaxes = accepted_transfer_syntaxes()
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    if allowed_calling:
        ae.require_calling_aet = list(allowed_calling)
    server = ae.start_server(
        address, block=False, evt_handlers=_handlers(store, metrics), ssl_context=ssl_context
    )
    if server is None:  # only with block=True
        raise AssertionError("unreachable")
    return server
