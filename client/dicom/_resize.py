"""Resizing display-ready radiographs to a model's input size, the display table applied on the way.

Shrinking is OpenCV's ``INTER_AREA`` (each output pixel the area-weighted mean of the input pixels it
covers) computed by one compiled pass that looks every stored value up in the display table as it
sums it: a 2500 x 2048 radiograph is never materialised as 8-bit grey (docs/how-to/benchmarks.md,
"The display table and the resize in one pass").
Enlarging (small images) applies the table, then ``cv2.INTER_LINEAR``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from numba import njit

from radserve.client.dicom._display import IDENTITY
from radserve.model_card import ResizeMode as ResizeMode  # re-exported by radserve.client.dicom


def apply_lut(values: np.ndarray[Any, Any], lut: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``lut[values]`` as a new uint8 image (OpenCV's table lookup for 8-bit values)."""
    if values.dtype == np.uint8 and lut.size == 256:
        return np.asarray(cv2.LUT(values, lut))
    return np.asarray(lut[values])


def resize(
    image: np.ndarray[Any, Any],
    size: tuple[int, int],
    mode: ResizeMode,
    lut: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Resize the uint8 H x W image ``lut[image]`` to ``size`` = (height, width).

    ``image`` is uint8 grey levels (``lut`` None: the identity) or uint8/uint16 stored values indexed
    into the uint8 table ``lut``. ``letterbox`` keeps the aspect ratio and centres the image on black
    (0); ``stretch`` scales each axis independently.
    """
    if lut is None:
        lut = IDENTITY
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"expected a uint8 H x W image (or uint16 with a table), got {image.dtype} {image.shape}"
        )
    if lut.dtype != np.uint8 or lut.ndim != 1 or lut.size < 1 << (8 * image.dtype.itemsize):
        raise ValueError(
            f"expected a uint8 table of {1 << (8 * image.dtype.itemsize)} entries, got {lut.shape}"
        )
    height, width = (int(n) for n in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = image.shape
    if rows < 1 or cols < 1:
        raise ValueError(f"cannot resize an empty image {image.shape}")
    top, left, inner_h, inner_w = placement((rows, cols), (height, width), mode)
    if (inner_h, inner_w) == (height, width):
        return _scale(image, lut, height, width)
    out = np.zeros((height, width), dtype=np.uint8)
    out[top : top + inner_h, left : left + inner_w] = _scale(image, lut, inner_h, inner_w)
    return out


def placement(source: tuple[int, int], size: tuple[int, int], mode: ResizeMode) -> tuple[int, int, int, int]:
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


def _scale(
    image: np.ndarray[Any, Any], lut: np.ndarray[Any, Any], height: int, width: int
) -> np.ndarray[Any, Any]:
    rows, cols = image.shape
    if height <= rows and width <= cols:
        means = _lut_area(image, lut, *_area_table(rows, height), *_area_table(cols, width))
        return np.asarray(np.rint(means).astype(np.uint8))
    shrinking = height * width < rows * cols
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(apply_lut(image, lut), (width, height), interpolation=interpolation)


@lru_cache(maxsize=256)
def _area_table(source: int, target: int) -> tuple[np.ndarray[Any, Any], ...]:
    """Per output index: first and end of the whole input cells it covers, the weights of the partial
    cells before and after them, and 1 / its width (OpenCV's ``computeResizeAreaTab``)."""
    scale = source / target
    first, end = np.empty(target, np.int64), np.empty(target, np.int64)
    before, after, inverse = np.zeros(target), np.zeros(target), np.empty(target)
    for index in range(target):
        start = index * scale
        stop = start + scale
        cell = min(scale, source - start)
        whole_end = min(math.floor(stop), source - 1)
        whole_first = min(math.ceil(start), whole_end)
        if whole_first - start > 1e-3:
            before[index] = whole_first - start
        if stop - whole_end > 1e-3:
            after[index] = min(stop - whole_end, 1.0, cell)
        first[index], end[index], inverse[index] = whole_first, whole_end, 1.0 / cell
    for array in (first, end, before, after, inverse):
        array.flags.writeable = False
    return first, end, before, after, inverse


def area_weights(source: int, target: int) -> np.ndarray[Any, Any]:
    """The ``target x source`` matrix of :func:`_area_table`'s weights: row ``i`` averages the input
    cells output ``i`` covers (a shrink along one axis is one matrix product; the GPU path uses it)."""
    first, end, before, after, inverse = _area_table(source, target)
    weights = np.zeros((target, source), np.float32)
    for index in range(target):
        weights[index, first[index] : end[index]] = 1.0
        if before[index]:
            weights[index, first[index] - 1] += before[index]
        if after[index]:
            weights[index, end[index]] += after[index]
        weights[index] *= inverse[index]
    return weights


@njit(cache=True, nogil=True)  # numba compiles it for the argument types of each call: no annotations
def _lut_area(  # type: ignore[no-untyped-def]
    image, lut, y_first, y_end, y_before, y_after, y_inverse, x_first, x_end, x_before, x_after, x_inverse
):
    """Area means (float32) of ``lut[image]``: per output row, sum the table values of its input rows
    (integers; the partial rows weighted), then the columns of each output pixel."""
    columns = image.shape[1]
    out = np.empty((y_first.size, x_first.size), np.float32)
    whole = np.empty(columns, np.int32)
    summed = np.empty(columns, np.float32)
    for oy in range(y_first.size):
        whole[:] = 0
        for sy in range(y_first[oy], y_end[oy]):
            row = image[sy]
            for x in range(columns):
                whole[x] += lut[row[x]]
        for x in range(columns):
            summed[x] = whole[x]
        for sy, weight in ((y_first[oy] - 1, y_before[oy]), (y_end[oy], y_after[oy])):
            if weight != 0:
                row = image[sy]
                w = np.float32(weight)
                for x in range(columns):
                    summed[x] += w * lut[row[x]]
        for ox in range(x_first.size):
            total = np.float32(0)
            for x in range(x_first[ox], x_end[ox]):
                total += summed[x]
            if x_before[ox] != 0:
                total += np.float32(x_before[ox]) * summed[x_first[ox] - 1]
            if x_after[ox] != 0:
                total += np.float32(x_after[ox]) * summed[x_end[ox]]
            out[oy, ox] = total * np.float32(x_inverse[ox] * y_inverse[oy])
    return out
