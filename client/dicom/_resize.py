"""Resizing display-ready radiographs to a model's input size."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np


def resize(image: np.ndarray, size: tuple[int, int], mode: Literal["letterbox", "stretch"]) -> np.ndarray:
    """Resize a uint8 H x W image to ``size`` = (height, width).

    Shrinking uses ``cv2.INTER_AREA`` (antialiased), enlarging ``cv2.INTER_LINEAR``.
    ``letterbox`` keeps the aspect ratio and centres the image on black (0);
    ``stretch`` scales each axis independently.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 H x W image, got {image.dtype} {image.shape}")
    height, width = (int(n) for n in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = image.shape
    if rows < 1 or cols < 1:
        raise ValueError(f"cannot resize an empty image {image.shape}")
    top, left, inner_h, inner_w = placement((rows, cols), (height, width), mode)
    if (inner_h, inner_w) == (height, width):
        return _scale(image, height, width)
    out = np.zeros((height, width), dtype=np.uint8)
    out[top : top + inner_h, left : left + inner_w] = _scale(image, inner_h, inner_w)
    return out


def placement(
    source: tuple[int, int], size: tuple[int, int], mode: Literal["letterbox", "stretch"]
) -> tuple[int, int, int, int]:
    """Where :func:`resize` puts a ``source`` (rows, cols) image in ``size``: (top, left, height, width)."""
    rows, cols = source
    height, width = size
    if mode == "stretch":
        return 0, 0, height, width
    if mode != "letterbox":
        raise ValueError(f"mode must be 'letterbox' or 'stretch', got {mode!r}")
    scale = min(height / rows, width / cols)
    inner_h = min(height, max(1, round(rows * scale)))
    inner_w = min(width, max(1, round(cols * scale)))
    return (height - inner_h) // 2, (width - inner_w) // 2, inner_h, inner_w


def _scale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    rows, cols = image.shape
    if (rows, cols) == (height, width):
        return image.copy()
    shrinking = height * width < rows * cols
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)
