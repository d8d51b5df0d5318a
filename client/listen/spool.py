"""The spool: received instances on disk, fsync'ed before the sender hears success.

An instance is written to a temporary name, flushed and fsync'ed, renamed to
``<SOPInstanceUID>.dcm`` and the folder fsync'ed, so that after a crash every instance that was
acknowledged is either in the spool or already has its result row. Its file is removed once its
rows (and SRs) are fsync'ed; a crash between the two leaves a file whose path is already in the
results, which :meth:`Spool.pending` drops instead of classifying it twice. An instance that keeps
failing moves to ``quarantine/`` inside the spool, where nothing picks it up again.

The spool holds patient images: the folder is 0700, its files 0600, whatever the umask, and one
process owns it (:class:`~radserve.client.ownership.OwnerLock`, taken before anything is read).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from radserve.client.ownership import OwnerLock, sync_folder

__all__ = ["Spool"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PARTIAL = ".partial"
_CONFLICT = ".conflict"
_DIGESTS = ".digests"
_ATTEMPTS = ".attempts"
QUARANTINE = "quarantine"


class Spool:
    """A folder of received instances, one file per SOP Instance UID, owned by this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.lock = OwnerLock(self.folder)
        self.quarantine_folder = self.folder / QUARANTINE
        self._attempts = self.folder / _ATTEMPTS
        self._attempts.mkdir(mode=0o700, exist_ok=True)

    def path_for(self, sop_instance_uid: str) -> Path:
        """Where an instance is kept: named by its UID (a malformed UID gets a fresh one)."""
        uid = sop_instance_uid if _UID.match(sop_instance_uid or "") else generate_uid()
        return self.folder / f"{uid}.dcm"

    def conflict_path(self, path: Path, digest: str) -> Path:
        """Where an instance whose UID is known with other content waits for its row."""
        return self.folder / f"{path.stem}.{digest[:16]}{_CONFLICT}"

    def conflicts(self) -> list[Path]:
        """Conflicting instances still waiting for their ``uid_conflict`` row."""
        return sorted(self.folder.glob(f"*{_CONFLICT}"))

    def conflict_names(self) -> set[str]:
        """Names of every conflicting instance kept, waiting or quarantined."""
        found = [*self.folder.glob(f"*{_CONFLICT}"), *self.quarantine_folder.glob(f"*{_CONFLICT}")]
        return {path.name for path in found}

    def record_digest(self, name: str, digest: str) -> None:
        """Remember the content hash of the instance spooled as ``name`` (for de-duplication)."""
        descriptor = os.open(self.folder / _DIGESTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, f"{name} {digest}\n".encode())
        finally:
            os.close(descriptor)

    def digests(self) -> dict[str, str]:
        """The content hash of every instance spooled so far, by file name (the latest one wins)."""
        try:
            text = (self.folder / _DIGESTS).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        pairs = (line.split(" ", 1) for line in text.splitlines() if " " in line)
        return {name: digest for name, digest in pairs}

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` (a DICOM file) durably to ``path``: it survives a crash once this returns."""
        partial = path.with_name(path.name + _PARTIAL)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
        sync_folder(self.folder)

    def remove(self, path: Path) -> None:
        """Remove a classified instance (durably: the folder is fsync'ed)."""
        path.unlink(missing_ok=True)
        sync_folder(self.folder)
        self.end_attempt(path)

    def attempts(self, path: Path) -> int:
        """Attempts at ``path`` that never ended: the listener died during each."""
        try:
            return int((self._attempts / path.name).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def begin_attempt(self, path: Path) -> None:
        """Count an attempt before it starts (not fsync'ed: it guards against crash loops, not power cuts)."""
        (self._attempts / path.name).write_text(str(self.attempts(path) + 1))

    def end_attempt(self, path: Path) -> None:
        """The attempt ended with the listener alive."""
        (self._attempts / path.name).unlink(missing_ok=True)

    def quarantine(self, path: Path) -> Path:
        """Move an instance that keeps failing out of the spool's way; where it is now."""
        self.quarantine_folder.mkdir(mode=0o700, exist_ok=True)
        target = self.quarantine_folder / path.name
        os.replace(path, target)
        sync_folder(self.quarantine_folder)
        sync_folder(self.folder)
        self.end_attempt(path)
        return target

    def pending(self, done: Callable[[str], bool]) -> list[Path]:
        """Instances waiting for classification, oldest first; those whose path is ``done``
        (rows written just before a crash) and torn partial writes are removed."""
        waiting = []
        for path in self.folder.iterdir():
            if path.name.endswith(_PARTIAL) or done(str(path)):
                path.unlink(missing_ok=True)
            elif path.suffix == ".dcm" and path.is_file():
                waiting.append(path)
        return sorted(waiting, key=lambda path: path.stat().st_mtime_ns)

    def close(self) -> None:
        """Give up ownership of the folder."""
        self.lock.release()
