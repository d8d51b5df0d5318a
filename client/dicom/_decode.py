"""Decoding Pixel Data into frames of raw stored values.

Native data is viewed in place; JPEG, JPEG-LS, JPEG 2000 and HTJ2K frames are decoded by imagecodecs
(libjpeg-turbo, CharLS, OpenJPEG, OpenJPH: all BSD/MIT licensed); RLE and the rare native layouts
(bit-packed, colour, 8-bit OW big endian) go through pydicom's own decoders (pylibjpeg-rle). Signed
codec output is returned as the unsigned container of the same width: the display lookup table
masks to Bits Stored and sign-extends, so signedness quirks of the codestream cannot leak through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import ExplicitVRBigEndian, RLELossless

from radserve.client.dicom._read import (
    HTJ2K_SYNTAXES,
    J2K_SYNTAXES,
    JPEG_LOSSLESS_SYNTAXES,
    JPEG_SYNTAXES,
    JPEGLS_SYNTAXES,
    NATIVE_SYNTAXES,
    PixelInfo,
)
from radserve.errors import InputError
from radserve.reasons import Reason

Kind = Literal["MONO", "RGB", "YBR"]

_J2K_THREADS = min(4, os.cpu_count() or 1)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(slots=True)
class Decoded:
    """Decoded frames: ``MONO`` (stored values, H x W) or ``RGB``/``YBR`` (H x W x 3).

    ``bits`` is the significant bit depth of colour samples (used to scale them to 8 bits).
    """

    frames: list[np.ndarray[Any, Any]]
    kind: Kind
    bits: int


def decode(ds: Dataset, info: PixelInfo, path: str) -> Decoded:
    """Decode every frame of ``ds``; raise :class:`InputError` on any failure."""
    uid = info.transfer_syntax
    if uid in NATIVE_SYNTAXES and _fast_native(ds, info):
        return _finish(ds, info, _native_frames(ds, info), "MONO", path)
    if uid in NATIVE_SYNTAXES or uid == RLELossless:
        return _pydicom_frames(ds, info, path)
    return _codec_frames(ds, info, path)


def _fast_native(ds: Dataset, info: PixelInfo) -> bool:
    """Greyscale 8/16/32-bit native data that a plain NumPy view describes exactly."""
    if info.samples != 1 or info.bits_allocated == 1:
        return False
    if info.transfer_syntax == ExplicitVRBigEndian and info.bits_allocated == 8:
        vr = getattr(ds["PixelData"], "VR", "OB")
        return vr != "OW"
    return True


def _native_frames(ds: Dataset, info: PixelInfo) -> list[np.ndarray[Any, Any]]:
    order = ">" if info.transfer_syntax == ExplicitVRBigEndian else "<"
    dtype = np.dtype(f"{order}u{info.bits_allocated // 8}")
    count = info.frames * info.rows * info.columns
    arr = np.frombuffer(ds.PixelData, dtype=dtype, count=count)
    arr = arr.reshape(info.frames, info.rows, info.columns)
    if order == ">" and dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return list(arr)


def _kind_for(photometric: str) -> Kind:
    if photometric.startswith("MONOCHROME") or photometric == "PALETTE COLOR":
        return "MONO"
    return "YBR" if photometric in ("YBR_FULL", "YBR_FULL_422") else "RGB"


def _pydicom_frames(ds: Dataset, info: PixelInfo, path: str) -> Decoded:
    """RLE and unusual native layouts, via pydicom's decoders (raw: no colour conversion)."""
    try:
        arr, meta = get_decoder(info.transfer_syntax).as_array(ds, raw=True)
    except Exception as exc:
        raise InputError(
            path, Reason.DECODE_FAILED, f"cannot decode {info.transfer_syntax.name} Pixel Data: {exc}"
        ) from exc
    photometric = str(meta.get("photometric_interpretation", info.photometric))
    if info.frames == 1:
        arr = arr[np.newaxis]
    frames = [_unsigned(f) for f in arr]
    for i, frame in enumerate(frames):
        check_shape(frame.shape, info, i, path)
    return _finish(ds, info, frames, _kind_for(photometric), path)


def _finish(
    ds: Dataset, info: PixelInfo, frames: list[np.ndarray[Any, Any]], kind: Kind, path: str
) -> Decoded:
    """Expand PALETTE COLOR indices to RGB; pass everything else through."""
    if info.photometric != "PALETTE COLOR":
        return Decoded(frames, kind, info.bits_stored)
    try:
        rgb = [apply_color_lut(f, ds) for f in frames]
    except Exception as exc:
        raise InputError(
            path, Reason.INCONSISTENT_ATTRIBUTES, f"cannot apply the palette colour LUT: {exc}"
        ) from exc
    return Decoded(rgb, "RGB", 8 * rgb[0].dtype.itemsize)


def encoded_frames(ds: Dataset, info: PixelInfo, path: str) -> list[bytes]:
    """The encapsulated Pixel Data's ``info.frames`` frames; :class:`InputError` if it cannot be split."""
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        encoded = list(generate_frames(ds.PixelData, number_of_frames=info.frames, extended_offsets=offsets))
    except Exception as exc:
        raise InputError(
            path, Reason.DECODE_FAILED, f"cannot split the encapsulated Pixel Data into frames: {exc}"
        ) from exc
    if len(encoded) < info.frames:
        raise InputError(
            path,
            Reason.DECODE_FAILED,
            f"encapsulated Pixel Data holds {len(encoded)} frame(s), NumberOfFrames is {info.frames}",
        )
    return encoded[: info.frames]


def _codec_frames(ds: Dataset, info: PixelInfo, path: str) -> Decoded:
    """JPEG family, JPEG-LS, JPEG 2000 and HTJ2K frames via imagecodecs."""
    import imagecodecs  # only compressed files need it (a GPU host may decode them with nvImageCodec)

    uid = info.transfer_syntax
    kind = _kind_for(info.photometric)
    frames = []
    for i, data in enumerate(encoded_frames(ds, info, path)):
        try:
            if uid in JPEG_SYNTAXES:
                frame, kind = _decode_jpeg(data, info)
            elif uid in JPEGLS_SYNTAXES:
                frame = imagecodecs.jpegls_decode(data)
            elif uid in HTJ2K_SYNTAXES:
                frame = _decode_htj2k(data)
            else:
                frame = imagecodecs.jpeg2k_decode(data, numthreads=_J2K_THREADS)
        except Exception as exc:
            raise InputError(
                path, Reason.DECODE_FAILED, f"cannot decode frame {i + 1} ({uid.name}): {exc}"
            ) from exc
        if uid in J2K_SYNTAXES | HTJ2K_SYNTAXES and info.samples == 3 and info.photometric != "YBR_FULL":
            kind = "RGB"  # the codec undoes the J2K multiple component transform itself
        frame = _unsigned(frame)
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[:, :, 0]
        check_shape(frame.shape, info, i, path)
        frames.append(frame)
    return _finish(ds, info, frames, kind, path)


def _decode_jpeg(data: bytes, info: PixelInfo) -> tuple[np.ndarray[Any, Any], Kind]:
    """libjpeg-turbo for every JPEG process; the lossless-only ljpeg codec as a fallback."""
    import imagecodecs

    if info.samples == 3:
        space = _jpeg_colour_space(data, info.photometric)
        frame = imagecodecs.jpeg8_decode(data, colorspace=space, outcolorspace=space)
        return frame, "RGB" if space == "RGB" else "YBR"
    try:
        return imagecodecs.jpeg8_decode(data), "MONO"
    except Exception:
        if info.transfer_syntax not in JPEG_LOSSLESS_SYNTAXES:
            raise
        return imagecodecs.ljpeg_decode(data), "MONO"


def _decode_htj2k(data: bytes) -> np.ndarray[Any, Any]:
    """OpenJPH is about twice as fast as OpenJPEG on HTJ2K; OpenJPEG covers what it rejects."""
    import imagecodecs

    try:
        return imagecodecs.htj2k_decode(data)
    except Exception:
        return imagecodecs.jpeg2k_decode(data, numthreads=_J2K_THREADS)


def _jpeg_colour_space(data: bytes, photometric: str) -> str:
    """Colour space of a 3-component JPEG, the way libjpeg and pydicom decide it.

    An Adobe APP14 marker's transform flag wins, then component IDs 'R','G','B', then a JFIF
    marker (YCbCr); otherwise the DICOM Photometric Interpretation says.
    """
    adobe: int | None = None
    jfif = False
    ids = b""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i + 4 : i + 2 + length]
        if marker == 0xE0 and segment[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker in _SOF_MARKERS and len(segment) >= 6:
            ids = bytes(segment[6 + 3 * k] for k in range(segment[5]) if 6 + 3 * k < len(segment))
        elif marker == 0xDA:
            break
        i += 2 + length
    if adobe is not None:
        return "RGB" if adobe == 0 else "YCbCr"
    if ids.upper() == b"RGB":
        return "RGB"
    if jfif:
        return "YCbCr"
    return "RGB" if photometric == "RGB" else "YCbCr"


def _unsigned(frame: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The same bits in an unsigned container (two's complement for signed codec output)."""
    if frame.dtype.kind == "i":
        return frame.view(f"u{frame.dtype.itemsize}")
    if frame.dtype.kind != "u":
        raise TypeError(f"decoder returned {frame.dtype}")
    return frame


def check_shape(shape: tuple[int, ...], info: PixelInfo, index: int, path: str) -> None:
    """An :class:`InputError` unless a decoded frame's ``shape`` is the header's (rows, columns[, 3])."""
    expected = (info.rows, info.columns) + ((3,) if info.samples == 3 else ())
    if shape != expected:
        got = "x".join(str(n) for n in shape)
        want = "x".join(str(n) for n in expected)
        raise InputError(
            path,
            Reason.INCONSISTENT_ATTRIBUTES,
            f"frame {index + 1} decodes to {got} but the header says {want}",
        )
