"""DICOM domain: reading, decoding and display processing of projection radiographs.

``read_radiographs(path)`` turns a DICOM file into one :class:`Radiograph` per frame whose
``pixels`` are the uint8 greyscale image a radiologist would see (bones bright): see
:mod:`client.dicom._display` for the pipeline. A radiograph keeps its stored values and display table
apart, so that :meth:`Radiograph.resized` looks values up while it resizes (one pass, no full-size
8-bit image). Every failure is a
:class:`radserve.errors.InputError` naming the file and a short ``reason`` code: ``unreadable``,
``not_dicom``, ``truncated``, ``no_pixel_data``, ``unsupported_transfer_syntax``,
``unsupported_photometric``, ``bad_dimensions``, ``inconsistent_attributes``, ``decode_failed``.
Messages and logs name files and UIDs only, never patient attributes. It is two steps of the
classify flow (:mod:`radserve.client.flow`): :func:`decode_file` (read and decode the frames) and
:func:`display` (the display LUT, to uint8).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from radserve.client.dicom._decode import Decoded, check_shape, decode, encoded_frames
from radserve.client.dicom._display import (
    IDENTITY,
    auto_window,
    display_lut,
    modality_values,
    needs_auto_window,
    render_colour,
    render_mono,
    window_from_counts,
)
from radserve.client.dicom._params import DisplayParams, display_params
from radserve.client.dicom._read import SUPPORTED_TRANSFER_SYNTAXES, PixelInfo, pixel_info, read_dataset
from radserve.client.dicom._resize import ResizeMode, apply_lut, area_weights, placement, resize
from radserve.errors import InputError
from radserve.model_card import RenderingPolicy
from radserve.reasons import Reason

# the steps' parts other packages build on (the GPU preparer, MRI series, the GPU bundle) are public
__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "DecodedFile",
    "DisplayParams",
    "PixelInfo",
    "Radiograph",
    "area_weights",
    "auto_window",
    "captured_warnings",
    "check_shape",
    "decode",
    "decode_dataset",
    "decode_file",
    "display",
    "display_lut",
    "display_params",
    "encoded_frames",
    "modality_values",
    "needs_auto_window",
    "pixel_info",
    "placement",
    "radiographs_from_dataset",
    "read_dataset",
    "read_radiographs",
    "resize",
    "window_from_counts",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Radiograph:
    """One frame of a DICOM file, display-ready as ``lut[values]``."""

    path: str
    sop_instance_uid: str
    frame: int | None  # 1-based frame number for multi-frame files, None for single-frame
    # uint8 or uint16 H x W: stored values (grey levels when ``lut`` is the identity)
    values: np.ndarray[Any, Any]
    lut: np.ndarray[Any, Any]  # uint8 display table indexed by ``values`` (IDENTITY for grey levels)
    rendering_note: str = ""  # where the rendering policy overruled the header (the row's rendering_note)

    @property
    def pixels(self) -> np.ndarray[Any, Any]:
        """uint8 H x W, display-ready: 0 = black, 255 = white."""
        return apply_lut(self.values, self.lut)

    def resized(self, size: tuple[int, int], mode: ResizeMode) -> np.ndarray[Any, Any]:
        """The display-ready image at ``size`` = (height, width), the table applied while resizing."""
        return resize(self.values, size, mode, self.lut)


def read_radiographs(path: str | os.PathLike[str], policy: RenderingPolicy | None = None) -> list[Radiograph]:
    """Read a DICOM file into one display-ready :class:`Radiograph` per frame.

    Args:
        path: the DICOM file.
        policy: the model card's rendering policy (None: the default, radserve's own pipeline).

    Returns:
        One radiograph per frame.

    Raises:
        InputError: the file cannot be used (a :class:`NotAcceptedError` when the policy refuses it).
    """
    name = os.fsdecode(path)
    with captured_warnings(name):
        return display(decode_file(name, policy))


def _without_values(message: str) -> str:
    """The text of a pydicom warning before the first colon or quote: the rest may quote a value."""
    return re.split(r"[:'\"]", message, maxsplit=1)[0].strip()[:120]


class _ValueFreeRecords(logging.Filter):
    """pydicom also logs each warning it raises (``warn_and_log``): its records lose their values."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _without_values(record.getMessage()), None
        return True


logging.getLogger("pydicom").addFilter(_ValueFreeRecords())


@contextmanager
def captured_warnings(path: str) -> Iterator[None]:
    """Catch the warnings pydicom (or a codec) raises meanwhile and log them without their values.

    pydicom quotes the offending value (``Invalid value for VR DA: '19510203x'``), which may be a
    patient attribute: only the text before the first colon or quote is kept. Runs in decode workers.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                _LOG.info(
                    "%s: %s: %s", path, warning.category.__name__, _without_values(str(warning.message))
                )


def radiographs_from_dataset(
    ds: Dataset, path: str, policy: RenderingPolicy | None = None
) -> list[Radiograph]:
    """Like :func:`read_radiographs` for a data set already in memory; ``path`` names it."""
    return display(decode_dataset(ds, path, policy))


@dataclass(frozen=True, slots=True)
class DecodedFile:
    """A file's frames as stored values (``MONO``) or colour samples, and how to display them."""

    path: str
    sop_instance_uid: str
    decoded: Decoded
    params: DisplayParams | None  # None for colour images
    multi_frame: bool


def decode_file(path: str | os.PathLike[str], policy: RenderingPolicy | None = None) -> DecodedFile:
    """The decode step: read ``path`` and decode every frame; :class:`InputError` on any failure."""
    name = os.fsdecode(path)
    return decode_dataset(read_dataset(name), name, policy)


def decode_dataset(ds: Dataset, path: str, policy: RenderingPolicy | None = None) -> DecodedFile:
    """Like :func:`decode_file` for a data set already in memory; ``path`` names it."""
    with _input_errors(path):
        if "PixelData" not in ds:
            raise InputError(path, Reason.NO_PIXEL_DATA, "the data set has no Pixel Data (7FE0,0010)")
        info = pixel_info(ds, path)
        decoded = decode(ds, info, path)
        params = display_params(ds, info, path, policy) if decoded.kind == "MONO" else None
        return DecodedFile(path, _sop_instance_uid(ds), decoded, params, info.frames > 1)


def display(decoded: DecodedFile) -> list[Radiograph]:
    """The display step: each frame's stored values with its display table (colour: grey levels)."""
    result = []
    with _input_errors(decoded.path):
        for index, frame in enumerate(decoded.decoded.frames):
            values, lut = (
                render_mono(frame, decoded.params)
                if decoded.params is not None
                else (render_colour(frame, decoded.decoded), IDENTITY)
            )
            number = index + 1 if decoded.multi_frame else None
            note = decoded.params.rendering_note if decoded.params is not None else ""
            result.append(Radiograph(decoded.path, decoded.sop_instance_uid, number, values, lut, note))
    return result


@contextmanager
def _input_errors(path: str) -> Iterator[None]:
    """Turn whatever a codec or the display pipeline raises into an :class:`InputError`."""
    try:
        yield
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, Reason.BAD_DIMENSIONS, "image too large for the available memory") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust codecs raise PanicException, a BaseException, on bad data
        _LOG.debug("%s: unexpected %s while decoding", path, type(exc).__name__)
        raise InputError(
            path, Reason.DECODE_FAILED, f"unexpected {type(exc).__name__} while decoding"
        ) from exc


def _sop_instance_uid(ds: Dataset) -> str:
    try:
        return str(ds.get("SOPInstanceUID") or "")
    except Exception:
        return ""
