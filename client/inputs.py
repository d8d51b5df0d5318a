"""Which files a run covers: files named directly, and every file under folders named."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Side files found in DICOM folders (manifests, reports, previews) that are not radiographs.
SIDECAR_SUFFIXES = frozenset({".csv", ".json", ".jsonl", ".txt", ".md", ".html", ".xml", ".png", ".npy"})


@dataclass(frozen=True)
class Inputs:
    """The files to process, and the side files left out of folders (reported, never silent)."""

    files: tuple[Path, ...]
    sidecars: tuple[Path, ...]


def discover(paths: Iterable[str | os.PathLike[str]]) -> Inputs:
    """Expand ``paths`` in a stable order; a named file is always an input, even a side file.

    A path that does not exist stays an input so that the run reports it as an error row.
    """
    files: list[Path] = []
    sidecars: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if found.name.startswith(".") or not found.is_file():
                continue
            (sidecars if found.suffix.lower() in SIDECAR_SUFFIXES else files).append(found)
    return Inputs(files=tuple(dict.fromkeys(files)), sidecars=tuple(sidecars))
