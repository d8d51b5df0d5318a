"""DICOM network ingestion: a Storage SCP that classifies what a PACS or a modality sends.

``Listener(ListenOptions(model=..., output=...)).run()`` answers C-ECHO and C-STORE (CR, DX) on
an AE title and port, spools each instance durably before acknowledging it, and classifies the
spool through the normal classify runner (:func:`radserve.client.classify.classify`): the same rows,
the same metrics, optional SR documents to a folder or forwarded to a Storage SCP.
"""

from radserve.client.listen.forward import Destination
from radserve.client.listen.listen_metrics import ListenerMetrics
from radserve.client.listen.scp import STORAGE_CLASSES, AssociationLimits, accepted_transfer_syntaxes
from radserve.client.listen.service import Listener, ListenOptions

__all__ = [
    "STORAGE_CLASSES",
    "AssociationLimits",
    "Destination",
    "ListenOptions",
    "Listener",
    "ListenerMetrics",
    "accepted_transfer_syntaxes",
]
