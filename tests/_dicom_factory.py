"""Builders of small real DICOM files for the client.dicom tests, and an independent reference
rendering built from pydicom's own pixel functions."""

from __future__ import annotations

import os
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom import uid as U
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import UID

TEST_FILES = Path(os.path.dirname(pydicom.data.__file__)) / "test_files"
PATIENT_NAME = "SECRET^PATIENT"
PATIENT_ID = "PID-0042-SECRET"
DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
# highdicom's own DX test image (its wheel ships no test files): tests/data/highdicom/README.md
HIGHDICOM_DX = str(Path(__file__).parent / "data" / "highdicom" / "dx_image.dcm")


def shipped(name: str) -> str:
    """Path of a test file shipped inside the installed pydicom (no download); skip if absent."""
    path = TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"{name} is not shipped with the installed pydicom")
    return str(path)


def phantom(
    rows: int = 96, cols: int = 80, bits: int = 12, signed: bool = False, seed: int = 0
) -> np.ndarray:
    """A smooth radiograph-like image with noise covering most of the ``bits`` range."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    top = (1 << bits) - 1
    img = top * (0.5 + 0.35 * np.sin(x / 9.0) * np.cos(y / 13.0)) + rng.normal(0, top * 0.02, (rows, cols))
    img = np.clip(np.rint(img), 0, top).astype(np.int64)
    if signed:
        img -= 1 << (bits - 1)
        return img.astype(np.int16 if bits > 8 else np.int8)
    return img.astype(np.uint16 if bits > 8 else np.uint8)


def make_dataset(
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = U.ExplicitVRLittleEndian,
    **attributes: object,
) -> Dataset:
    """A DX data set holding ``pixels`` (H x W, F x H x W, or H x W x 3) natively encoded."""
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    rows, cols = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = DX_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.543.1"
    ds.SOPClassUID = DX_SOP_CLASS
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.543.1"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = int(rows), int(cols)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 * pixels.dtype.itemsize
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    order = ">" if transfer_syntax == U.ExplicitVRBigEndian else "<"
    data = pixels.astype(pixels.dtype.newbyteorder(order)).tobytes()
    ds.PixelData = data + b"\x00" * (len(data) % 2)
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    return ds


def encode(ds: Dataset, pixels: np.ndarray, uid: str) -> Dataset:
    """Re-encode ``ds`` (whose native Pixel Data is ``pixels``) with transfer syntax ``uid``.

    pydicom's encoders cover RLE, JPEG-LS and JPEG 2000; imagecodecs the JPEG processes and U.HTJ2K.
    """
    uid = UID(uid)
    if uid in (U.RLELossless, U.JPEGLSLossless, U.JPEG2000Lossless):
        ds.compress(uid, pixels)
        return ds
    if uid == U.JPEGLSNearLossless:
        ds.compress(uid, pixels, jls_error=2)
        return ds
    if uid == U.JPEG2000:
        ds.compress(uid, pixels, j2k_psnr=[70])
        return ds
    frames = pixels if pixels.ndim == 3 and "NumberOfFrames" in ds else pixels[np.newaxis]
    bits = int(ds.BitsStored)
    encoded = []
    for frame in frames:
        if uid in (U.JPEGLossless, U.JPEGLosslessSV1):
            encoded.append(imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1, bitspersample=bits))
        elif uid == U.JPEGBaseline8Bit:
            encoded.append(imagecodecs.jpeg8_encode(frame, level=95))
        elif uid == U.JPEGExtended12Bit:
            encoded.append(imagecodecs.jpeg8_encode(frame, level=95, bitspersample=12))
        elif uid in (U.HTJ2KLossless, U.HTJ2KLosslessRPCL):
            encoded.append(imagecodecs.htj2k_encode(frame, reversible=True))
        elif uid == U.HTJ2K:
            encoded.append(imagecodecs.htj2k_encode(frame, level=0.0001, reversible=False))
        else:
            raise ValueError(f"no test encoder for {uid.name}")
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = uid
    return ds


def save(ds: Dataset, directory: Path, name: str) -> str:
    path = directory / name
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def stored_values(ds: Dataset) -> np.ndarray:
    """pydicom's decoded stored values (frames first), as int64."""
    arr = ds.pixel_array.astype(np.int64)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr if frames > 1 else arr[np.newaxis]


def reference_display(
    ds: Dataset, arr: np.ndarray, *, prefer_lut: bool = False, lut_bits: int | None = None
) -> np.ndarray:
    """Independent display rendering of one frame with pydicom's functions (float, 0..255).

    Modality LUT -> window (preferred, or the VOI LUT Sequence with ``prefer_lut`` as pydicom's
    ``apply_voi_lut(prefer_lut=True)``) or VOI LUT Sequence or 0.5-99.5 % window -> polarity by the
    Photometric Interpretation (the default rendering policy). A VOI LUT's output is scaled by
    ``lut_bits``, else by its descriptor's depth.
    """
    modality = apply_modality_lut(arr, ds).astype(np.float64)
    stored = arr.astype(np.int64)
    padding = np.zeros(arr.shape, dtype=bool)
    if "PixelPaddingValue" in ds:
        low = int(ds.PixelPaddingValue)
        high = int(ds.get("PixelPaddingRangeLimit", low))
        low, high = min(low, high), max(low, high)
        padding = (stored >= low) & (stored <= high)
    if "WindowCenter" in ds and not (prefer_lut and ds.get("VOILUTSequence")):
        voi = apply_windowing(modality.copy(), ds)
        if ds.get("ModalityLUTSequence"):
            y_min, y_max = 0.0, 2.0 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1
        elif ds.PixelRepresentation == 0:
            y_min, y_max = 0.0, 2.0**ds.BitsStored - 1
        else:
            y_min, y_max = -(2.0 ** (ds.BitsStored - 1)), 2.0 ** (ds.BitsStored - 1) - 1
        if "RescaleSlope" in ds and "RescaleIntercept" in ds and not ds.get("ModalityLUTSequence"):
            y_min = y_min * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            y_max = y_max * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        y = (voi - y_min) / (y_max - y_min)
    elif ds.get("VOILUTSequence"):
        voi = apply_voi(np.rint(modality).astype(np.int64), ds)
        y = voi / (2.0 ** (lut_bits or ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    else:
        values = modality[~padding]
        low, high = np.percentile(values, [0.5, 99.5], method="inverted_cdf")
        y = np.clip((modality - low) / (high - low), 0, 1) if high > low else (modality > low) * 1.0
    if ds.PhotometricInterpretation == "MONOCHROME1":
        y = 1.0 - y
    grey = y * 255.0
    grey[padding] = 0
    return grey


def max_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours.astype(np.float64) - reference).max())
