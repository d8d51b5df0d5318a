"""Classify MRI studies: files → studies → one tensor and one result row per study.

Every input file is accounted for: an unreadable file gets its own error row; readable slices are
grouped by StudyInstanceUID and each study gets one row, keyed by its StudyInstanceUID, with the
prediction or the reason it could not be built (:mod:`radserve.client.mri_series`). The rows come from
a :class:`~radserve.client.session.Session` (:meth:`~radserve.client.session.Session.classify_studies`),
so they carry the card's decision, the OOD flag and each failure's own reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from radserve.client.grpc_client import ConnectionOptions
from radserve.client.inputs import discover
from radserve.client.mri_series import read_slices
from radserve.client.options import ClassifyOptions
from radserve.client.results import ResultRow
from radserve.client.sync_client import SyncSession

__all__ = ["classify_studies", "read_slices"]


def classify_studies(
    paths: Sequence[str | os.PathLike[str]],
    model: str,
    connection: str | Sequence[str] | ConnectionOptions,
    lesion_index: int | None = None,
) -> list[ResultRow]:
    """Rows for every study under ``paths`` (files or folders), served by ``model``.

    Args:
        paths: DICOM files and folders, in any order and mix.
        model: a study-level model (its card has several channels).
        connection: the server URL(s), or the full connection options (TLS, admin key, retry).
        lesion_index: the lesion slice along the T1W slice normal (default: the central slice).

    Returns:
        The error rows of unreadable files, then one row per study.

    Raises:
        ServerError: when no server has ``model`` ready.
        ModelCardError: when ``model`` takes single radiographs.
    """
    with SyncSession(model, ClassifyOptions().with_connection(ConnectionOptions.of(connection))) as session:
        return session.classify_studies(discover(paths).files, lesion_index)
