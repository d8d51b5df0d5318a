"""The display attributes of a greyscale header, read under the model card's rendering policy.

:func:`display_params` collects every attribute the rendering depends on into one hashable
:class:`DisplayParams` (the key of the cached lookup tables of :mod:`client.dicom._display`).
The policy (:class:`~radserve.model_card.RenderingPolicy`) decides where archives differ
(docs/design.md, "Display pipeline"): polarity follows the Photometric Interpretation (MONOCHROME1
inverted exactly once) when a Presentation LUT Shape contradicts it, or the instance is refused; the
window or the VOI LUT Sequence first when both are present; a VOI LUT whose entries do not fit the
depth its descriptor declares is scaled by the depth of its entries (dcmtk's
``--ignore-vlut-depth``). Native values stored above bit 0 (High Bit > Bits Stored - 1) are shifted
down first. Each such departure from the header is a note in the row (``rendering_note``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

from radserve.client.dicom._read import PixelInfo
from radserve.errors import InputError, NotAcceptedError
from radserve.model_card import RenderingPolicy
from radserve.reasons import Reason

__all__ = ["DisplayParams", "Lut", "display_params", "stored_values"]

_LOG = logging.getLogger(__name__)

_FUNCTIONS = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})


@dataclass(frozen=True, slots=True)
class Lut:
    """A Modality or VOI LUT: first mapped input value, nominal output bits, entries."""

    first: int
    bits: int
    data: bytes  # uint16, native byte order (bytes so the whole key is hashable)

    def array(self) -> np.ndarray[Any, Any]:
        """The entries as uint16."""
        return np.frombuffer(self.data, dtype=np.uint16)


@dataclass(frozen=True, slots=True)
class DisplayParams:
    """Every header attribute the greyscale rendering depends on: the lookup table cache key.

    ``notes`` (not part of the key) say where the rendering departed from the header's literal
    reading under the rendering policy; they become the row's ``rendering_note``.
    """

    bits_stored: int
    signed: bool
    shift: int = 0  # the stored value's lowest bit in the container (High Bit + 1 - Bits Stored)
    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: Lut | None = None
    window: tuple[float, float, str] | None = None  # centre, width, VOI LUT Function
    voi_lut: Lut | None = None
    padding: tuple[int, int] | None = None  # inclusive range of stored values
    invert: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def rendering_note(self) -> str:
        """The notes as one line ('' when the header was followed literally)."""
        return "; ".join(self.notes)


def display_params(
    ds: Dataset, info: PixelInfo, path: str, policy: RenderingPolicy | None = None
) -> DisplayParams:
    """Collect the display attributes of a greyscale data set under a model card's rendering policy.

    Raises:
        NotAcceptedError: the policy refuses the instance (``presentation_lut_shape``).
        InputError: the attributes are unusable (``inconsistent_attributes``).
    """
    try:
        return _display_params(ds, info, path, policy or RenderingPolicy())
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"unusable display attributes ({type(exc).__name__})",
        ) from exc


def _display_params(ds: Dataset, info: PixelInfo, path: str, policy: RenderingPolicy) -> DisplayParams:
    big_endian = info.transfer_syntax == ExplicitVRBigEndian
    notes: list[str] = []
    if info.shift:
        notes.append(
            f"High Bit {info.shift + info.bits_stored - 1} with Bits Stored {info.bits_stored}: "
            f"stored values read from bit {info.shift} up"
        )
    slope = _float(ds.get("RescaleSlope"), 1.0)
    intercept = _float(ds.get("RescaleIntercept"), 0.0)
    if slope == 0.0:
        _LOG.warning("%s: RescaleSlope is 0, using 1", path)
        slope = 1.0
    modality_lut = None
    if ds.get("ModalityLUTSequence"):
        modality_lut = _lut(ds.ModalityLUTSequence[0], info.signed, big_endian, path)

    window = None
    centre = _first(ds.get("WindowCenter"))
    width = _first(ds.get("WindowWidth"))
    if centre is not None and width is not None:
        function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
        if function not in _FUNCTIONS:
            _LOG.warning("%s: unknown VOILUTFunction, using LINEAR", path)
            function = "LINEAR"
        if width >= 1 or (width > 0 and function != "LINEAR"):
            window = (centre, width, function)
        else:
            _LOG.warning("%s: invalid WindowWidth %s ignored", path, width)

    voi_lut = None
    if (window is None or policy.voi_first == "lut") and ds.get("VOILUTSequence"):
        signed_input = modality_lut is None and (info.signed or intercept < 0 or slope < 0)
        voi_lut = _lut(ds.VOILUTSequence[0], signed_input, big_endian, path)
        if voi_lut is not None:
            window = None
            voi_lut = _voi_lut_depth(voi_lut, policy, notes)

    padding = None
    pad_value = _integer(ds.get("PixelPaddingValue"))
    if pad_value is not None:
        limit = _integer(ds.get("PixelPaddingRangeLimit"))
        low, high = _stored(pad_value, info), _stored(limit if limit is not None else pad_value, info)
        padding = (min(low, high), max(low, high))

    return DisplayParams(
        bits_stored=info.bits_stored,
        signed=info.signed,
        shift=info.shift,
        slope=slope,
        intercept=intercept,
        modality_lut=modality_lut,
        window=window,
        voi_lut=voi_lut,
        padding=padding,
        invert=_invert(ds, info, path, policy, notes),
        notes=tuple(notes),
    )


def _invert(ds: Dataset, info: PixelInfo, path: str, policy: RenderingPolicy, notes: list[str]) -> bool:
    """MONOCHROME1 is inverted; a contradicting Presentation LUT Shape is overruled or refused.

    PS3.3 C.11.6.1.2 pairs IDENTITY with MONOCHROME2 and INVERSE with MONOCHROME1; DX objects of some
    vendors carry the other one (dcm4che's option to trust Photometric Interpretation exists for them).
    """
    invert = info.photometric == "MONOCHROME1"
    shape = str(ds.get("PresentationLUTShape") or "").strip().upper()
    if shape not in ("INVERSE", "IDENTITY") or (shape == "INVERSE") == invert:
        return invert
    conflict = f"Presentation LUT Shape {shape} contradicts {info.photometric}"
    if policy.presentation_lut_conflict == "refuse":
        raise NotAcceptedError(
            path, "presentation_lut_shape", f"{conflict} (refused by the model's rendering policy)"
        )
    _LOG.warning("%s: %s; rendered as %s", path, conflict, info.photometric)
    notes.append(f"{conflict}: rendered as {info.photometric}")
    return invert


def _voi_lut_depth(lut: Lut, policy: RenderingPolicy, notes: list[str]) -> Lut:
    """The VOI LUT with the output depth it is scaled by: its entries' own when the policy takes the
    depth from the data and they need fewer or more bits than the descriptor declares."""
    needed = max(int(lut.array().max()).bit_length(), 1)
    if policy.voi_lut_depth != "data" or needed == lut.bits:
        return lut
    notes.append(f"VOI LUT entries use {needed} bits, its descriptor declares {lut.bits}: scaled by {needed}")
    return Lut(first=lut.first, bits=needed, data=lut.data)


def _float(value: Any, default: float) -> float:
    value = _first(value)
    return default if value is None else value


def _first(value: Any) -> float | None:
    """First value of a (possibly multi-valued) numeric attribute, None if absent or invalid."""
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        if not len(value):
            return None
        value = value[0]
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _integer(value: Any) -> int | None:
    result = _first(value)
    return None if result is None else int(result)


def _stored(value: int, info: PixelInfo) -> int:
    """A padding value as the stored value it matches (US/SS ambiguity resolved by the header)."""
    if info.signed and value >= 1 << (info.bits_stored - 1) and value < 1 << 16:
        return int(_sign_extend(np.array([value & ((1 << info.bits_stored) - 1)]), info.bits_stored)[0])
    return value


def _lut(item: Dataset, signed_input: bool, big_endian: bool, path: str) -> Lut | None:
    """Parse a Modality/VOI LUT item (LUT Descriptor + LUT Data, US or OW)."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise InputError(path, Reason.INCONSISTENT_ATTRIBUTES, "LUT Descriptor must have 3 values")
    entries, first, bits = descriptor
    entries = entries or 65536
    if signed_input and first >= 1 << 15:
        first -= 1 << 16  # the descriptor's second value is SS for signed input
    raw = item.LUTData
    if isinstance(raw, bytes | bytearray):
        if bits <= 8 and len(raw) == entries:
            data = np.frombuffer(raw, dtype=np.uint8)
        else:
            data = np.frombuffer(raw[: len(raw) // 2 * 2], dtype=">u2" if big_endian else "<u2")
    else:
        data = np.asarray([raw] if isinstance(raw, int) else list(raw), dtype=np.int64)
    data = data[:entries]
    if data.size == 0:
        _LOG.warning("%s: empty LUT Data ignored", path)
        return None
    if data.size < entries:
        _LOG.warning("%s: LUT Data has %d of %d entries", path, data.size, entries)
    return Lut(first=first, bits=bits, data=data.astype(np.uint16).tobytes())


def _sign_extend(values: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    half = 1 << (bits - 1)
    return (values ^ half) - half


def stored_values(
    raw: np.ndarray[Any, Any], bits_stored: int, signed: bool, shift: int = 0
) -> np.ndarray[Any, Any]:
    """Stored values (int64) of raw container values: shifted down by ``shift`` (High Bit + 1 - Bits
    Stored), masked to Bits Stored and sign-extended when Pixel Representation is 1."""
    stored = (raw.astype(np.int64, copy=False) >> shift) & ((1 << bits_stored) - 1)
    return _sign_extend(stored, bits_stored) if signed else stored
