"""Reading DICOM files and validating the Image Pixel module attributes.

Messages never quote attribute values other than pixel-module numbers and UIDs, so that no
patient identifier can reach an error row or a log line.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from radserve.errors import InputError, NotAcceptedError
from radserve.reasons import Reason
from radserve.settings import SETTINGS

_LOG = logging.getLogger(__name__)

MAX_SIDE = 16384
"""Largest accepted Rows or Columns."""
MAX_FRAMES = 65536
"""Largest accepted Number of Frames."""

NATIVE_SYNTAXES: frozenset[str] = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    }
)
# Encapsulated syntaxes by codec family (the decoders in _decode.py dispatch on these).
JPEG_SYNTAXES: frozenset[str] = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}
)
JPEG_LOSSLESS_SYNTAXES: frozenset[str] = frozenset({JPEGLossless, JPEGLosslessSV1})
JPEGLS_SYNTAXES: frozenset[str] = frozenset({JPEGLSLossless, JPEGLSNearLossless})
J2K_SYNTAXES: frozenset[str] = frozenset({JPEG2000Lossless, JPEG2000})
HTJ2K_SYNTAXES: frozenset[str] = frozenset({HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K})
ENCAPSULATED_SYNTAXES: frozenset[str] = (
    frozenset({RLELossless}) | JPEG_SYNTAXES | JPEGLS_SYNTAXES | J2K_SYNTAXES | HTJ2K_SYNTAXES
)
SUPPORTED_TRANSFER_SYNTAXES: frozenset[str] = NATIVE_SYNTAXES | ENCAPSULATED_SYNTAXES

PIXEL_DATA_TAG = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"})
_PALETTE = "PALETTE COLOR"
# Projection X-ray modalities stored as MONOCHROME1 or MONOCHROME2: no default polarity is safe.
_BOTH_POLARITIES = frozenset({"CR", "DX", "MG", "IO"})


@dataclass(frozen=True, slots=True)
class PixelInfo:
    """The validated Image Pixel module of a data set."""

    transfer_syntax: UID
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int
    shift: int = 0  # High Bit + 1 - Bits Stored of native Pixel Data: the stored value's lowest bit

    @property
    def frame_bytes(self) -> int:
        """Bytes of one natively encoded frame (Bits Allocated 8 or more)."""
        pixels = self.rows * self.columns
        if self.photometric == "YBR_FULL_422":
            return pixels * 2 * (self.bits_allocated // 8)
        return pixels * self.samples * (self.bits_allocated // 8)


def read_dataset(path: str) -> Dataset:
    """Read ``path`` into a data set with its pixel data, or raise :class:`InputError`."""
    try:
        fp = open(path, "rb")  # noqa: SIM115 - closed below, after pydicom has read it
    except IsADirectoryError:
        raise InputError(path, Reason.UNREADABLE, "is a directory, not a file") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise InputError(path, Reason.UNREADABLE, f"cannot read the file ({why})") from None
    with fp:
        try:
            size = os.fstat(fp.fileno()).st_size
            ds = _parse(path, fp, size)
        except IsADirectoryError:
            raise InputError(path, Reason.UNREADABLE, "is a directory, not a file") from None
        except InputError:
            raise
        except OSError as exc:  # a read error of the file itself, not of its content
            why = exc.strerror or type(exc).__name__
            raise InputError(path, Reason.UNREADABLE, f"cannot read the file ({why})") from None
        if PIXEL_DATA_TAG not in ds:
            fp.seek(0)
            if _looks_truncated(ds, fp.read()):
                raise InputError(path, Reason.TRUNCATED, "the file ends before the end of its data set")
            raise InputError(path, Reason.NO_PIXEL_DATA, "the data set has no Pixel Data (7FE0,0010)")
    raw = ds.get_item(PIXEL_DATA_TAG)
    if (
        isinstance(raw, RawDataElement)
        and raw.length != _UNDEFINED_LENGTH
        and raw.value is not None
        and len(raw.value) < raw.length
    ):
        raise InputError(
            path,
            Reason.TRUNCATED,
            f"Pixel Data declares {raw.length} bytes but the file holds {len(raw.value)}",
        )
    return ds


def _parse(path: str, fp: BinaryIO, size: int) -> Dataset:
    """pydicom's parse of an open file, its failures classified."""
    if size == 0:
        raise InputError(path, Reason.NOT_DICOM, "empty file")
    try:
        return pydicom.dcmread(fp)
    except InvalidDicomError:
        fp.seek(0)
        return _read_without_preamble(path, fp.read())
    except Exception as exc:
        if isinstance(exc, EOFError | struct.error) or (
            type(exc) is OSError and exc.errno is None  # pydicom: "No tag to read at ..."
        ):
            raise InputError(path, Reason.TRUNCATED, "the file ends inside its DICOM data set") from None
        if isinstance(exc, OSError):
            raise
        # pydicom raises many types on corrupt headers
        raise InputError(
            path, Reason.NOT_DICOM, f"cannot parse the DICOM data set ({type(exc).__name__})"
        ) from None


def _read_without_preamble(path: str, data: bytes) -> Dataset:
    """Accept a data set without preamble and File Meta if it plainly is an image data set."""
    group_le = int.from_bytes(data[:2], "little")
    group_be = int.from_bytes(data[:2], "big")
    if len(data) < 8 or not ({group_le, group_be} & {0x0002, 0x0008}):
        raise InputError(path, Reason.NOT_DICOM, "not a DICOM file (no 'DICM' prefix)")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        plausible = any(tag in ds for tag in (0x00080016, 0x00080018, 0x00280010, PIXEL_DATA_TAG))
    except Exception:
        plausible = False
    if not plausible:
        raise InputError(path, Reason.NOT_DICOM, "not a DICOM file (no 'DICM' prefix)")
    return ds


def _looks_truncated(ds: Dataset, data: bytes) -> bool:
    """True when the parse stopped early: an unread Pixel Data tag, a short last element, or
    bytes left over after the last element pydicom could read."""
    if b"\xe0\x7f\x10\x00" in data or b"\x7f\xe0\x00\x10" in data:
        return True
    tags = list(ds.keys())
    if not tags:
        return False
    last = ds.get_item(tags[-1])
    if not isinstance(last, RawDataElement) or last.length == _UNDEFINED_LENGTH:
        return False
    if last.value is not None and len(last.value) < last.length:
        return True
    return last.value_tell is not None and last.value_tell + last.length < len(data)


def transfer_syntax(ds: Dataset, path: str) -> UID:
    """The data set's transfer syntax; inferred from its encoding when File Meta lacks it."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(str(uid))
    raw = ds.get_item(PIXEL_DATA_TAG)
    if isinstance(raw, RawDataElement) and raw.length == _UNDEFINED_LENGTH:
        raise InputError(
            path,
            "unsupported_transfer_syntax",
            "encapsulated Pixel Data but no Transfer Syntax UID in the File Meta",
        )
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if little is False:
        return ExplicitVRBigEndian
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian


def _int(ds: Dataset, keyword: str, path: str, default: int | None = None) -> int:
    """An integer attribute, or ``default`` when absent; invalid values are an InputError."""
    try:
        value: Any = ds.get(keyword)
    except Exception:
        value = "invalid"
    if value is None or value == "":
        if default is None:
            reason = (
                Reason.BAD_DIMENSIONS if keyword in ("Rows", "Columns") else Reason.INCONSISTENT_ATTRIBUTES
            )
            raise InputError(path, reason, f"{keyword} is missing")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        reason = (
            Reason.BAD_DIMENSIONS
            if keyword in ("Rows", "Columns", "NumberOfFrames")
            else Reason.INCONSISTENT_ATTRIBUTES
        )
        raise InputError(path, reason, f"{keyword} is not an integer") from None


def _photometric(ds: Dataset, path: str, bits_allocated: int) -> tuple[str, int]:
    """(PhotometricInterpretation, SamplesPerPixel), checked against each other."""
    samples = _int(ds, "SamplesPerPixel", path, 0)
    try:
        photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    except Exception:
        photometric = ""
    if not photometric:
        modality = str(ds.get("Modality") or "").strip().upper()
        if modality in _BOTH_POLARITIES and samples in (0, 1):
            raise NotAcceptedError(
                path,
                "photometric",
                f"no Photometric Interpretation on a {modality} image: MONOCHROME1 or MONOCHROME2 "
                "(which way is bone bright) is unknown",
            )
        photometric = "MONOCHROME2" if samples in (0, 1) else "RGB"
        _LOG.warning("%s: no PhotometricInterpretation, assuming %s", path, photometric)
    if photometric in _MONOCHROME or photometric == _PALETTE:
        expected_samples = 1
    elif photometric in _COLOUR:
        expected_samples = 3
    else:
        raise InputError(
            path,
            "unsupported_photometric",
            f"PhotometricInterpretation {photometric} is not supported",
        )
    samples = samples or expected_samples
    if samples != expected_samples:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"SamplesPerPixel is {samples} but {photometric} needs {expected_samples}",
        )
    if samples == 3 and bits_allocated == 1:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"BitsAllocated {bits_allocated} is not supported for colour images",
        )
    return photometric, samples


def pixel_info(ds: Dataset, path: str) -> PixelInfo:
    """Validate the Image Pixel module of ``ds`` against its Pixel Data; raise InputError."""
    uid = transfer_syntax(ds, path)
    if uid not in SUPPORTED_TRANSFER_SYNTAXES:
        raise InputError(
            path,
            "unsupported_transfer_syntax",
            f"transfer syntax {uid} ({uid.name}) is not supported",
        )
    rows = _int(ds, "Rows", path)
    columns = _int(ds, "Columns", path)
    frames = _int(ds, "NumberOfFrames", path, 1)
    for name, value, limit in (
        ("Rows", rows, MAX_SIDE),
        ("Columns", columns, MAX_SIDE),
        ("NumberOfFrames", frames, MAX_FRAMES),
    ):
        if not 1 <= value <= limit:
            raise InputError(path, Reason.BAD_DIMENSIONS, f"{name} is {value}, must be 1..{limit}")

    bits_allocated = _int(ds, "BitsAllocated", path)
    if bits_allocated not in (1, 8, 16, 32):
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"BitsAllocated is {bits_allocated}, must be 1, 8, 16 or 32",
        )
    bits_stored = _int(ds, "BitsStored", path, bits_allocated)
    if not 1 <= bits_stored <= bits_allocated:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"BitsStored {bits_stored} is not within 1..BitsAllocated ({bits_allocated})",
        )
    high_bit = _int(ds, "HighBit", path, bits_stored - 1)
    if not bits_stored - 1 <= high_bit < bits_allocated:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"HighBit {high_bit} is not within BitsStored - 1 ({bits_stored - 1})..BitsAllocated - 1 "
            f"({bits_allocated - 1})",
        )
    representation = _int(ds, "PixelRepresentation", path, 0)
    if representation not in (0, 1):
        raise InputError(path, Reason.INCONSISTENT_ATTRIBUTES, f"PixelRepresentation is {representation}")

    photometric, samples = _photometric(ds, path, bits_allocated)
    pixels = frames * rows * columns * samples  # bounded before any decoding allocates it
    if pixels > SETTINGS.client.max_pixels_per_file:
        raise InputError(
            path,
            "bad_dimensions",
            f"{frames} frame(s) of {rows} x {columns} x {samples} is {pixels} pixels, "
            f"more than {SETTINGS.client.max_pixels_per_file} (client.max_pixels_per_file)",
        )
    planar = _int(ds, "PlanarConfiguration", path, 0) if samples == 3 else 0

    info = PixelInfo(
        transfer_syntax=uid,
        rows=rows,
        columns=columns,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=representation == 1,
        photometric=photometric,
        planar=planar,
        # PS3.5 8.1.1: native values may sit above bit 0; codecs return them from bit 0 (PS3.5 8.2)
        shift=high_bit + 1 - bits_stored if uid in NATIVE_SYNTAXES else 0,
    )
    if uid in NATIVE_SYNTAXES:
        _check_native_length(ds, info, path)
    return info


def _check_native_length(ds: Dataset, info: PixelInfo, path: str) -> None:
    """Native Pixel Data must hold at least every frame the header promises."""
    raw = ds.get_item(PIXEL_DATA_TAG)
    if isinstance(raw, RawDataElement) and raw.length == _UNDEFINED_LENGTH:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"encapsulated Pixel Data under the native transfer syntax {info.transfer_syntax.name}",
        )
    try:
        present = len(ds.PixelData)
    except Exception:
        raise InputError(path, Reason.DECODE_FAILED, "Pixel Data cannot be read") from None
    if info.bits_allocated == 1:
        # frames are bit-packed back to back
        needed = (info.rows * info.columns * info.samples * info.frames + 7) // 8
    else:
        needed = info.frame_bytes * info.frames
    if present < needed:
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"Pixel Data holds {present} bytes but {info.frames} frame(s) of "
            f"{info.rows}x{info.columns}x{info.samples} at {info.bits_allocated} bits "
            f"need {needed}",
        )
