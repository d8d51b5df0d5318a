"""DICOM domain: reading, decoding and display processing of projection radiographs.

``read_radiographs(path)`` turns a DICOM file into one :class:`Radiograph` per frame whose
``pixels`` are the uint8 greyscale image a radiologist would see (bones bright): see
:mod:`client.dicom._display` for the pipeline. A radiograph keeps its stored values and display table
apart, so that :meth:`Radiograph.resized` looks values up while it resizes (one pass, no full-size
8-bit image). Every failure is a
:class:`radserve.errors.InputError` naming the file and a short ``reason`` code: ``unreadable``,
``not_dicom``, ``truncated``, ``no_pixel_data``, ``unsupported_transfer_syntax``,
``unsupported_photometric``, ``bad_dimensions``, ``inconsistent_attributes``, ``decode_failed``.
Messages and logs name files and UIDs only, never patient attributes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from radserve.client.dicom._decode import decode
from radserve.client.dicom._display import IDENTITY, display_params, render_colour, render_mono
from radserve.client.dicom._read import SUPPORTED_TRANSFER_SYNTAXES, pixel_info, read_dataset
from radserve.client.dicom._resize import ResizeMode, apply_lut, resize
from radserve.errors import InputError

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Radiograph",
    "radiographs_from_dataset",
    "read_dataset",
    "read_radiographs",
    "resize",
]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Radiograph:
    """One frame of a DICOM file, display-ready as ``lut[values]``."""

    path: str
    sop_instance_uid: str
    frame: int | None  # 1-based frame number for multi-frame files, None for single-frame
    values: np.ndarray  # uint8 or uint16 H x W: stored values (grey levels when ``lut`` is the identity)
    lut: np.ndarray  # uint8 display table indexed by ``values`` (IDENTITY for grey levels)

    @property
    def pixels(self) -> np.ndarray:
        """uint8 H x W, display-ready: 0 = black, 255 = white."""
        return apply_lut(self.values, self.lut)

    def resized(self, size: tuple[int, int], mode: ResizeMode) -> np.ndarray:
        """The display-ready image at ``size`` = (height, width), the table applied while resizing."""
        return resize(self.values, size, mode, self.lut)


def read_radiographs(path: str | os.PathLike[str]) -> list[Radiograph]:
    """Read a DICOM file into one display-ready :class:`Radiograph` per frame.

    Raises :class:`InputError` (and nothing else) when the file cannot be used.
    """
    name = os.fsdecode(path)
    return radiographs_from_dataset(read_dataset(name), name)


def radiographs_from_dataset(ds: Dataset, path: str) -> list[Radiograph]:
    """Like :func:`read_radiographs` for a data set already in memory; ``path`` names it."""
    try:
        if "PixelData" not in ds:
            raise InputError(path, "no_pixel_data", "the data set has no Pixel Data (7FE0,0010)")
        info = pixel_info(ds, path)
        decoded = decode(ds, info, path)
        params = display_params(ds, info, path) if decoded.kind == "MONO" else None
        uid = _sop_instance_uid(ds)
        result = []
        for index, frame in enumerate(decoded.frames):
            values, lut = (
                render_mono(frame, params)
                if params is not None
                else (render_colour(frame, decoded), IDENTITY)
            )
            number = index + 1 if info.frames > 1 else None
            result.append(Radiograph(path, uid, number, values, lut))
        return result
    except InputError:
        raise
    except MemoryError:
        raise InputError(path, "bad_dimensions", "image too large for the available memory") from None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust codecs raise PanicException, a BaseException, on bad data
        _LOG.debug("%s: unexpected %s while decoding", path, type(exc).__name__)
        raise InputError(path, "decode_failed", f"unexpected {type(exc).__name__} while decoding") from exc


def _sop_instance_uid(ds: Dataset) -> str:
    try:
        return str(ds.get("SOPInstanceUID") or "")
    except Exception:
        return ""
