"""Shared-memory regions of the Python backend left in /dev/shm by a tritonserver that died.

Each Python-backend model instance maps a 1 MiB region ``triton_python_backend_shm_region_<uuid>``;
tritonserver unlinks them on a clean stop, a SIGKILL leaves them behind for good.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOGGER = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"


def _held_regions() -> set[str]:
    """Names of /dev/shm files any live process maps or holds open."""
    held: set[str] = set()
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            maps = (process / "maps").read_text(errors="replace")
            descriptors = [os.readlink(fd) for fd in (process / "fd").iterdir()]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for line in maps.splitlines():
            if str(SHM_DIR) in line:
                held.add(Path(line.split(None, 5)[-1].removesuffix(" (deleted)")).name)
        held.update(Path(target).name for target in descriptors if target.startswith(str(SHM_DIR)))
    return held


def remove_stale_regions(shm_dir: Path = SHM_DIR) -> int:
    """Remove this user's Python-backend regions that no live process holds; how many were removed."""
    if not shm_dir.is_dir():
        return 0
    candidates = [
        path
        for path in shm_dir.glob(f"{REGION_PREFIX}*")
        if path.is_file() and path.stat().st_uid == os.getuid()
    ]
    if not candidates:
        return 0
    held = _held_regions()
    removed = 0
    for path in candidates:
        if path.name not in held:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
    LOGGER.info("removed %d stale shared-memory region(s) from %s", removed, shm_dir)
    return removed
