"""The spool: received instances on disk, fsync'ed before the sender hears success.

An instance is written to a temporary name, flushed and fsync'ed, renamed to
``<SOPInstanceUID>.dcm`` and the folder fsync'ed, so that after a crash every instance that was
acknowledged is either in the spool or already has its result row. Its file is removed once its
rows are written (and flushed); a crash between the two leaves a file whose path is already in the
results, which :meth:`Spool.pending` drops instead of classifying it twice.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydicom.uid import generate_uid

__all__ = ["Spool"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PARTIAL = ".partial"


class Spool:
    """A folder of received instances, one file per SOP Instance UID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, sop_instance_uid: str) -> Path:
        """Where an instance is kept: named by its UID (a malformed UID gets a fresh one)."""
        uid = sop_instance_uid if _UID.match(sop_instance_uid or "") else generate_uid()
        return self.folder / f"{uid}.dcm"

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` (a DICOM file) durably to ``path``: it survives a crash once this returns."""
        partial = path.with_name(path.name + _PARTIAL)
        with partial.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
        self._sync_folder()

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def pending(self, done: set[str]) -> list[Path]:
        """Instances waiting for classification, oldest first; those whose path is in ``done``
        (rows written just before a crash) and torn partial writes are removed."""
        waiting = []
        for path in self.folder.iterdir():
            if path.name.endswith(_PARTIAL) or str(path) in done:
                path.unlink(missing_ok=True)
            elif path.suffix == ".dcm":
                waiting.append(path)
        return sorted(waiting, key=lambda path: path.stat().st_mtime_ns)

    def _sync_folder(self) -> None:
        descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
