"""One owner per output, and files only their owner reads.

:class:`OwnerLock` is an exclusive ``flock`` held for as long as a run writes a file or folder.

The lock lives in a file of its own beside what it guards (``.<name>.lock``, or ``.lock`` inside a
folder), because results files are rewritten by rename (:func:`~radserve.client.results.completed_paths`)
and a lock on the old inode would guard nothing. The kernel drops the lock when its holder dies, so a
crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import grp
import os
from pathlib import Path

from radserve.errors import ConfigurationError
from radserve.settings import SETTINGS

__all__ = ["OwnerLock", "restrict", "sync_folder"]


def restrict(path: Path, group: str = SETTINGS.listen.file_group) -> None:
    """Make a results or SR file readable by its owner only (0600), or also by ``group`` (0640).

    Args:
        path: an existing file.
        group: a group name; empty for owner only.

    Raises:
        ConfigurationError: ``group`` does not exist.
    """
    if not group:
        os.chmod(path, 0o600)
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigurationError(f"file group {group!r} (listen.file_group) does not exist") from None
    os.chown(path, -1, gid)
    os.chmod(path, 0o640)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the renames and removals in it survive a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class OwnerLock:
    """An exclusive lock on ``target`` (a file or a folder), taken on construction.

    Args:
        target: the results file or the folder to own.

    Raises:
        ConfigurationError: another process holds the lock (its pid is named when known).
    """

    def __init__(self, target: Path) -> None:
        self.path = target / ".lock" if target.is_dir() else target.parent / f".{target.name}.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._descriptor)
            message = f"{target} is in use by another radserve process (pid {holder})"
            raise ConfigurationError(message) from None
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases it)."""
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1

    def __enter__(self) -> OwnerLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
