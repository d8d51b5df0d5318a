"""Boxes between the wire image and the source radiograph: the exact inverse of letterbox/stretch.

Coordinates are continuous pixel edges (x to the right, y down): a box ``(x0, y0, x1, y1)`` covers
pixels ``x0 <= x < x1``. A detector answers on the wire image; rows, CSV/JSONL and the DICOM SR give
boxes on the source image, mapped through the same placement :func:`radserve.client.dicom.resize`
used (:func:`radserve.client.dicom._resize.placement`), clipped to the image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from radserve.client.dicom import placement

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
    sx, sy = cols / width, rows / height
    x0, y0, x1, y1 = _affine(box, sx, sy, -left * sx, -top * sy)
    return (
        min(max(x0, 0.0), cols),
        min(max(y0, 0.0), rows),
        min(max(x1, 0.0), cols),
        min(max(y1, 0.0), rows),
    )


def source_to_wire(
    box: tuple[float, float, float, float], source: tuple[int, int], size: tuple[int, int], mode: Resize
) -> tuple[float, float, float, float]:
    """The forward mapping (training targets, tests)."""
    top, left, height, width = placement(source, size, mode)
    return _affine(box, width / source[1], height / source[0], left, top)


def _affine(
    box: tuple[float, float, float, float], sx: float, sy: float, dx: float, dy: float
) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return (x0 * sx + dx, y0 * sy + dy, x1 * sx + dx, y1 * sy + dy)
