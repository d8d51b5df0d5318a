"""Boxes between the wire image and the source radiograph: the exact inverse of letterbox/stretch.

Coordinates are continuous pixel edges (x to the right, y down): a box ``(x0, y0, x1, y1)`` covers
pixels ``x0 <= x < x1``. A detector answers on the wire image; rows, CSV/JSONL and the DICOM SR give
boxes on the source image, mapped through the same placement :func:`radserve.client.dicom.resize`
used (:func:`radserve.client.dicom._resize.placement`), clipped to the image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from radserve.client.dicom._resize import placement

Resize = Literal["letterbox", "stretch"]


@dataclass(frozen=True)
class Box:
    """A detection on the source image: pixel edges, score and label."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wire_to_source(
    box: tuple[float, float, float, float], source: tuple[int, int], size: tuple[int, int], mode: Resize
) -> tuple[float, float, float, float]:
    """A wire-image box on the ``source`` (rows, cols) image the client resized to ``size`` with ``mode``."""
    rows, cols = source
    top, left, height, width = placement(source, size, mode)
    x0, y0, x1, y1 = box
    sx, sy = cols / width, rows / height
    return (
        min(max((x0 - left) * sx, 0.0), cols),
        min(max((y0 - top) * sy, 0.0), rows),
        min(max((x1 - left) * sx, 0.0), cols),
        min(max((y1 - top) * sy, 0.0), rows),
    )


def source_to_wire(
    box: tuple[float, float, float, float], source: tuple[int, int], size: tuple[int, int], mode: Resize
) -> tuple[float, float, float, float]:
    """The forward mapping (training targets, tests)."""
    rows, cols = source
    top, left, height, width = placement(source, size, mode)
    x0, y0, x1, y1 = box
    sx, sy = width / cols, height / rows
    return (left + x0 * sx, top + y0 * sy, left + x1 * sx, top + y1 * sy)
