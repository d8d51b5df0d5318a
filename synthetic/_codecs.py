"""Private: DICOM pixel encoding of synthetic images (native and lossless compressed syntaxes)."""

from __future__ import annotations

from functools import cache

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

COMPRESSED_SYNTAXES: tuple[str, ...] = (
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    HTJ2KLossless,
)
"""Lossless compressed transfer syntaxes the generator knows how to write (if an encoder is installed)."""

NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


# --------------------------------------------------------------------------- encoders


@cache
def available_compressed_syntaxes() -> tuple[str, ...]:
    """The members of COMPRESSED_SYNTAXES this machine can encode, in COMPRESSED_SYNTAXES order."""
    from pydicom.pixels import get_encoder

    found = []
    for uid in COMPRESSED_SYNTAXES:
        if uid in (JPEGLosslessSV1, HTJ2KLossless):
            try:
                import imagecodecs
            except ImportError:
                continue
            name = "jpeg8_encode" if uid == JPEGLosslessSV1 else "htj2k_encode"
            if getattr(imagecodecs, name, None) is not None and _imagecodecs_roundtrip(uid):
                found.append(uid)
            continue
        try:
            if get_encoder(uid).is_available:
                found.append(uid)
        except (NotImplementedError, ValueError):
            continue
    return tuple(found)


def _imagecodecs_roundtrip(uid: str) -> bool:
    probe = (np.arange(64 * 48, dtype=np.uint16) * 13 % 4096).reshape(64, 48)
    try:
        return bool(np.array_equal(_decode_frame(uid, _encode_frame(uid, probe, 12)), probe))
    except Exception:  # an encoder built without that codec
        return False


def _encode_frame(uid: str, arr: np.ndarray, bits_stored: int) -> bytes:
    import imagecodecs

    if uid == JPEGLosslessSV1:
        data = bytes(imagecodecs.jpeg8_encode(arr, lossless=True, predictor=1, bitspersample=bits_stored))
        if data[2:4] == b"\xff\xe0":  # drop the JFIF APP0 segment: not used by DICOM
            data = data[:2] + data[4 + int.from_bytes(data[4:6], "big") :]
        return data
    if uid == HTJ2KLossless:
        return bytes(imagecodecs.htj2k_encode(arr, reversible=True))
    raise ValueError(f"no imagecodecs encoder for {uid}")


def _decode_frame(uid: str, data: bytes) -> np.ndarray:
    import imagecodecs

    if uid == JPEGLosslessSV1:
        return imagecodecs.jpeg8_decode(data)
    if uid == HTJ2KLossless:
        return imagecodecs.htj2k_decode(data)
    raise ValueError(f"no imagecodecs decoder for {uid}")


def set_pixels(ds: Dataset, stored: np.ndarray, transfer_syntax: str) -> None:
    """Store ``stored`` (uint16) in ``ds`` with ``transfer_syntax`` and set the file meta."""
    ts = UID(transfer_syntax)
    ds.file_meta.TransferSyntaxUID = ts
    if ts in NATIVE_SYNTAXES:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        return
    if ts in (JPEGLosslessSV1, HTJ2KLossless):
        ds.PixelData = encapsulate([_encode_frame(ts, stored, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        plugin = "pylibjpeg" if ts == RLELossless else ""
        try:
            ds.compress(ts, stored, encoding_plugin=plugin, generate_instance_uid=False)
        except (RuntimeError, ValueError):
            if not plugin:
                raise
            ds.compress(ts, stored, generate_instance_uid=False)  # pydicom's own RLE encoder
    else:
        raise ValueError(f"unsupported transfer syntax for synthetic images: {transfer_syntax}")
    ds.file_meta.TransferSyntaxUID = ts
    ds.LossyImageCompression = "00"


def decode_stored(ds: Dataset) -> np.ndarray:
    """Stored pixel values of a synthetic dataset, whatever its transfer syntax (pydicom where it can
    decode, else imagecodecs on the single frame)."""
    ts = ds.file_meta.TransferSyntaxUID
    if ts in (JPEGLosslessSV1, HTJ2KLossless):
        from pydicom.pixels import get_decoder

        if not get_decoder(ts).is_available:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            return _decode_frame(ts, frame).reshape(ds.Rows, ds.Columns)
    return ds.pixel_array
