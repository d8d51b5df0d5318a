"""The DICOM side of the listener: an Application Entity that takes C-STORE and C-ECHO.

Presentation contexts: CR and DX (for presentation and for processing) Image Storage, each with
the transfer syntaxes radserve decodes (:data:`SUPPORTED_TRANSFER_SYNTAXES`); a context proposed
with none of them is refused with result 0x04 (transfer syntaxes not supported), any other SOP class
with 0x03 (abstract syntax not supported). Verification (C-ECHO) is always supported. MR Image
Storage is negotiated only in study mode (``--studies``, a study-level model: then it is the only
storage class): a radiograph listener classifies one instance at a time, so a PACS keeps MR instances
instead of hearing success for instances its model cannot use.

:class:`AssociationLimits` bounds what a peer can hold: associations at once (beyond: A-ASSOCIATE-RJ,
local limit exceeded), the PDU size, the called AE title, and the ACSE, DIMSE and network timeouts
(docs/reference/conformance.md).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # pynetdicom makes them at import time
from pynetdicom.transport import ThreadedAssociationServer

from radserve.client.dicom import SUPPORTED_TRANSFER_SYNTAXES
from radserve.client.listen.audit import AuditLog
from radserve.client.listen.listen_metrics import ListenerMetrics
from radserve.settings import SETTINGS

__all__ = [
    "STORAGE_CLASSES",
    "STUDY_STORAGE_CLASSES",
    "AssociationLimits",
    "accepted_transfer_syntaxes",
    "start_scp",
    "storage_classes",
]

LOGGER = logging.getLogger(__name__)

STORAGE_CLASSES: tuple[str, ...] = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
# With a study-level model (--studies): single-slice MR only; Enhanced MR's functional groups are not read.
STUDY_STORAGE_CLASSES: tuple[str, ...] = (MRImageStorage,)


def storage_classes(studies: bool) -> tuple[str, ...]:
    """The storage SOP classes negotiated: MR with a study-level model (``--studies``), else radiographs."""
    return STUDY_STORAGE_CLASSES if studies else STORAGE_CLASSES


# C-STORE answers (PS3.4 B.2.3): 0xA7xx Refused: Out of Resources, 0xCxxx Error: Cannot Understand.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SPOOL_FAILED = 0xA701
CANNOT_UNDERSTAND = 0xC000

StoreHandler = Callable[[str, bytes, str], int]
"""Takes (SOP Instance UID, the encoded file with its meta information, the SHA-256 of the data set
as received, meta information left out); answers a C-STORE status."""


@dataclass(frozen=True)
class AssociationLimits:
    """What one peer may hold of the listener, and how long it may keep it waiting (also used by
    the listener's own associations as an SCU)."""

    max_associations: int = SETTINGS.listen.max_associations
    max_pdu_bytes: int = SETTINGS.listen.max_pdu_bytes
    require_called_ae: bool = SETTINGS.listen.require_called_ae
    acse_timeout: float = SETTINGS.listen.acse_timeout_seconds
    dimse_timeout: float = SETTINGS.listen.dimse_timeout_seconds
    network_timeout: float = SETTINGS.listen.network_timeout_seconds

    def apply(self, ae: AE) -> None:
        """Set these limits on a pynetdicom Application Entity."""
        ae.maximum_associations = self.max_associations
        ae.maximum_pdu_size = self.max_pdu_bytes
        ae.require_called_aet = self.require_called_ae
        ae.acse_timeout, ae.dimse_timeout = self.acse_timeout, self.dimse_timeout
        ae.network_timeout = self.network_timeout


def accepted_transfer_syntaxes() -> list[str]:
    """What the listener accepts, uncompressed first (pynetdicom keeps the proposer's preference)."""
    preferred = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    return preferred + sorted(SUPPORTED_TRANSFER_SYNTAXES - set(preferred))


def _peer(event: Event) -> dict[str, Any]:
    """Who is on the other side of an association, for the audit trail."""
    requestor = event.assoc.requestor
    subject = ""
    connection = event.assoc.dul.socket
    if connection is not None and isinstance(connection.socket, ssl.SSLSocket):  # DICOM TLS
        certificate = connection.socket.getpeercert() or {}  # empty without a client certificate
        subject = ",".join("=".join(pair) for rdn in certificate.get("subject", ()) for pair in rdn)
    return {
        "calling_ae": str(requestor.ae_title).strip(),
        "called_ae": str(getattr(requestor.primitive, "called_ae_title", "")).strip(),
        "peer": f"{requestor.address}:{requestor.port}",
        "tls_subject": subject,
    }


def _handlers(store: StoreHandler, metrics: ListenerMetrics, audit: AuditLog) -> list[EventHandlerType]:
    answered: dict[int, Counter[str]] = {}  # C-STORE statuses per association, for the audit trail

    def on_store(event: Event) -> int:
        status = _store(event)
        answered.setdefault(id(event.assoc), Counter())[f"0x{status:04X}"] += 1
        return status

    def _store(event: Event) -> int:
        request = cast(C_STORE, event.request)  # the handler is bound to EVT_C_STORE only
        uid = str(request.AffectedSOPInstanceUID or "")
        try:
            data = event.encoded_dataset()
            assert request.DataSet is not None  # pynetdicom's encoded_dataset() raised otherwise
            digest = hashlib.sha256(request.DataSet.getvalue()).hexdigest()
        except Exception as error:  # an unusable request must never kill the association thread
            LOGGER.warning("C-STORE of %s from %s unusable: %s", uid, event.assoc.requestor.ae_title, error)
            metrics.instances.labels("unreadable").inc()
            return CANNOT_UNDERSTAND
        return store(uid, data, digest)

    def ended(result: str) -> Callable[[Event], None]:
        def handler(event: Event) -> None:
            if result != "released":  # accepted ones are counted when accepted
                metrics.associations.labels(result).inc()
            statuses = answered.pop(id(event.assoc), Counter())
            audit.record(
                "association", result=result, instances=sum(statuses.values()), statuses=dict(statuses),
                **_peer(event),
            )  # fmt: skip

        return handler

    return [
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_ACCEPTED, lambda event: metrics.associations.labels("accepted").inc()),
        (evt.EVT_REJECTED, ended("rejected")),
        (evt.EVT_RELEASED, ended("released")),
        (evt.EVT_ABORTED, ended("aborted")),
    ]


def start_scp(
    address: tuple[str, int],
    ae_title: str,
    store: StoreHandler,
    metrics: ListenerMetrics,
    *,
    allowed_calling: Sequence[str] = (),
    limits: AssociationLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    audit: AuditLog | None = None,
    storage_classes: Sequence[str] = STORAGE_CLASSES,
) -> ThreadedAssociationServer:
    """Start the Storage SCP in background threads; ``allowed_calling`` empty admits every caller."""
    ae = AE(ae_title=ae_title)
    (limits or AssociationLimits()).apply(ae)
    syntaxes = accepted_transfer_syntaxes()
    for sop_class in storage_classes:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    if allowed_calling:
        ae.require_calling_aet = list(allowed_calling)
    server = ae.start_server(
        address,
        block=False,
        evt_handlers=_handlers(store, metrics, audit or AuditLog(None)),
        ssl_context=ssl_context,
    )
    if server is None:  # only with block=True
        raise AssertionError("unreachable")
    return server
