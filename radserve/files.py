"""Replacing a folder atomically (model publication, the server's view of a model)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
from pathlib import Path

LOGGER = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def swap_folder(staged: Path, live: Path) -> None:
    """Put ``staged`` in place of ``live`` atomically; the old ``live`` is removed afterwards.

    Args:
        staged: The complete new folder, on the same filesystem as ``live``.
        live: The folder readers use; created when it does not exist.
    """
    if not live.exists():
        staged.rename(live)
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    exchange = getattr(libc, "renameat2", None)
    if exchange is None or exchange(
        _AT_FDCWD, os.fsencode(staged), _AT_FDCWD, os.fsencode(live), _RENAME_EXCHANGE
    ):
        # no renameat2 here (not Linux, or the filesystem refuses): two renames, a brief absence
        LOGGER.warning("atomic folder exchange unavailable for %s; replacing it with two renames", live)
        retired = live.with_name(f".retired-{live.name}-{os.getpid()}")
        live.rename(retired)
        staged.rename(live)
        staged = retired
    shutil.rmtree(staged, ignore_errors=True)
