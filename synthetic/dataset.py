"""Synthetic projection radiographs as DICOM files: for the demo, training a demo model, tests, benchmarks.

Each image is a procedural phantom of one body region (see :data:`REGIONS`) with realistic
variation (pose, side, exposure, soft tissue, quantum noise, blur, collimation, lead marker, border)
stored the way real CR / DX "for presentation" objects are: 12 to 16 stored bits in 16 allocated,
MONOCHROME1 or MONOCHROME2, modality rescale, VOI windows (or none), pixel padding, and either a
native or a lossless compressed transfer syntax. Everything is deterministic for an rng seed,
UIDs included. Patient and study data are obviously synthetic (``SYNTHETIC^0001``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    generate_uid,
)

from radserve.synthetic._codecs import (
    NATIVE_SYNTAXES,
    available_compressed_syntaxes,
    decode_stored,
    set_pixels,
)
from radserve.synthetic.phantoms import RenderInfo, render

REGIONS: tuple[str, ...] = ("shoulder", "elbow", "hand", "pelvis", "knee")
"""Region labels, in the label order used by the demo model."""


_BODY_PART = {"shoulder": "SHOULDER", "elbow": "ELBOW", "hand": "HAND", "pelvis": "PELVIS", "knee": "KNEE"}
_MANUFACTURER = "radserve synthetic"
_DEFAULT_FIELD_MM = (250.0, 320.0)  # physical size of the long side of the detector, min..max


@dataclass(frozen=True, slots=True)
class SyntheticRecord:
    """One file written by :func:`write_synthetic_set`."""

    path: str  # absolute path of the file
    region: str  # the label, one of REGIONS
    sop_instance_uid: str
    transfer_syntax: str  # transfer syntax UID


def render_region(region: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """One radiograph of ``region`` as float32 ``shape`` "attenuation" in [0, 1].

    Bone is high, soft tissue medium, air about 0; outside the collimated field (if any) the
    value stays near the unexposed plate's (high). Quantum noise and blur are included.
    """
    img, _ = render(region, rng, shape)
    return img


# --------------------------------------------------------------------------- dataset


def _uid(rng: np.random.Generator, what: str) -> UID:
    return generate_uid(entropy_srcs=[what, *map(str, rng.integers(0, 2**63, size=3))])


def _ds(x: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{x:.6g}"
    return text if len(text) <= 16 else f"{x:.4e}"


def synthetic_dataset(
    region: str,
    rng: np.random.Generator,
    *,
    matrix: tuple[int, int] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A complete DICOM dataset (file meta included) of one synthetic radiograph of ``region``.

    With ``matrix`` given, the first draws from ``rng`` are exactly those of
    ``render_region(region, rng, matrix)``; without it a realistic matrix (rows 2000-2500,
    columns 1700-2500) is drawn first.
    """
    ds, _, _ = _build(region, rng, matrix, transfer_syntax, None)
    return ds


def _build(
    region: str,
    rng: np.random.Generator,
    matrix: tuple[int, int] | None,
    transfer_syntax: str,
    index: int | None,
) -> tuple[Dataset, np.ndarray, RenderInfo]:
    """(dataset, stored uint16 pixels, render info)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    if matrix is None:
        rows, cols = int(rng.integers(2000, 2501)), int(rng.integers(1700, 2501))
    else:
        rows, cols = int(matrix[0]), int(matrix[1])
    img, info = render(region, rng, (rows, cols))
    kvp = {"hand": 50, "elbow": 55, "knee": 65, "shoulder": 70, "pelvis": 80}[region]
    return radiograph_dataset(img, info, _BODY_PART[region], kvp, rng, matrix is None, transfer_syntax, index)


@dataclass(frozen=True)
class _Stored:
    """How a rendered image is stored: the pixel and modality choices, drawn from the rng."""

    is_dx: bool
    bits: int
    mono1: bool
    maxv: int
    pixels: np.ndarray  # uint16 stored values
    padding: bool
    pad_value: int
    slope: float
    intercept: float
    window: tuple[float, float]  # centre, width in stored values
    window_mode: int  # 0 none, 1 one window, 2 two windows, 3 one window + function


def _stored(img: np.ndarray, info: RenderInfo, rng: np.random.Generator, transfer_syntax: str) -> _Stored:
    """Acquisition and storage choices: bit depth, MONOCHROME1/2, padding, rescale, the window."""
    is_dx = bool(rng.random() < 0.5)
    bits = int(rng.choice([12, 14, 15, 16]))
    if transfer_syntax == HTJ2KLossless:
        bits = 16  # imagecodecs writes 16-bit HTJ2K codestreams: keep Bits Stored equal to their precision
    mono1 = bool(rng.random() < 0.4)
    maxv = (1 << bits) - 1
    lo = 1.0 + rng.uniform(0.0, 0.06) * maxv
    hi = rng.uniform(0.82, 1.0) * maxv - 1.0
    values = lo + img * np.float32(hi - lo)
    if mono1:
        values = np.float32(maxv) - values
    stored = np.clip(np.rint(values), 1 if not mono1 else 0, maxv - 1 if mono1 else maxv).astype(np.uint16)
    padding = info.field is not None and rng.random() < 0.5
    pad_value = maxv if mono1 else 0
    if padding:
        top, bottom, left, right = info.field
        stored[:top] = pad_value
        stored[bottom:] = pad_value
        stored[:, :left] = pad_value
        stored[:, right:] = pad_value

    if is_dx:  # the DX IOD fixes the modality LUT to identity
        slope, intercept = 1.0, 0.0
    else:
        slope = float(rng.choice([1.0, 1.0, 0.5, 0.75, 1.25, 1.5, 2.0]))
        intercept = float(rng.choice([0.0, 0.0, -1024.0, -512.0]))

    # window framing the anatomy: percentiles of the exposed field
    if info.field is not None:
        top, bottom, left, right = info.field
        sample = stored[top:bottom:7, left:right:7]
    else:
        sample = stored[::7, ::7]
    p_lo, p_hi = np.percentile(sample, [1.0, 99.5])
    centre_s, width_s = (p_lo + p_hi) / 2.0, max(2.0, (p_hi - p_lo) * 1.05)
    window_mode = int(rng.integers(0, 4))  # 0 none, 1 one window, 2 two windows, 3 one window + function
    return _Stored(
        is_dx,
        bits,
        mono1,
        maxv,
        stored,
        padding,
        pad_value,
        slope,
        intercept,
        (centre_s, width_s),
        window_mode,
    )


def radiograph_dataset(
    img: np.ndarray,
    info: RenderInfo,
    body_part: str,
    kvp: int,
    rng: np.random.Generator,
    realistic_spacing: bool,
    transfer_syntax: str,
    index: int | None,
) -> tuple[Dataset, np.ndarray, RenderInfo]:
    """A rendered radiograph stored as a CR or DX object: (dataset, stored uint16 pixels, render info)."""
    rows, cols = img.shape
    stored = _stored(img, info, rng, transfer_syntax)
    is_dx = stored.is_dx
    # -- UIDs and dates (deterministic from rng)
    study_uid, series_uid, sop_uid = _uid(rng, "study"), _uid(rng, "series"), _uid(rng, "sop")
    number = index + 1 if index is not None else int(rng.integers(1, 10000))
    day = _dt.date(2016, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 3650)))
    secs = int(rng.integers(7 * 3600, 19 * 3600))
    tm = f"{secs // 3600:02d}{secs // 60 % 60:02d}{secs % 60:02d}"
    years = round(1 + info.age * 16)
    sex = str(rng.choice(["M", "F"]))
    spacing = rng.uniform(*_DEFAULT_FIELD_MM) / max(rows, cols)
    if realistic_spacing:
        spacing = float(np.clip(spacing, 0.1, 0.15))
    spacing = round(float(spacing), 4)
    kvp += int(rng.integers(-5, 6))

    sop_class = DigitalXRayImageStorageForPresentation if is_dx else ComputedRadiographyImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADSERVE_SYN"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = tm
    ds.AccessionNumber = f"SYN{number:07d}"
    ds.Modality = "DX" if is_dx else "CR"
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = _MANUFACTURER
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"XR {body_part}"
    ds.SeriesDescription = f"{body_part} {info.view}"
    ds.ManufacturerModelName = "phantom"
    ds.PatientName = f"SYNTHETIC^{number:04d}"
    ds.PatientID = f"SYN{number:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = sex
    ds.PatientAge = f"{years:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic data, no real patient"
    ds.BodyPartExamined = body_part
    ds.KVP = str(kvp)
    ds.SoftwareVersions = "radserve-synthetic-1"
    ds.ViewPosition = info.view if info.view in ("AP", "PA") else ("LL" if info.laterality == "L" else "RL")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{number:04d}"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["", ""] if not is_dx else (["A", "F"] if info.view == "LATERAL" else ["L", "F"])
    ds.ImageLaterality = info.laterality
    if info.laterality != "U":
        ds.Laterality = info.laterality
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = [_ds(spacing), _ds(spacing)]
    if rng.random() < 0.5:
        ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    _image_modules(ds, stored, rng)
    set_pixels(ds, stored.pixels, transfer_syntax)
    return ds, stored.pixels, info


def _image_modules(ds: Dataset, stored: _Stored, rng: np.random.Generator) -> None:
    """DX detector, Image Pixel, modality LUT, presentation LUT and VOI LUT attributes."""
    is_dx, mono1, bits, maxv = stored.is_dx, stored.mono1, stored.bits, stored.maxv
    slope, intercept = stored.slope, stored.intercept
    (centre_s, width_s), window_mode = stored.window, stored.window_mode
    if is_dx:
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = str(rng.choice(["SCINTILLATOR", "DIRECT"]))
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower pixel value = less beam intensity (MONOCHROME1: bone is low)
        ds.PixelIntensityRelationshipSign = 1 if mono1 else -1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if stored.padding:
        ds.PixelPaddingValue = stored.pad_value
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "US"
    if is_dx or rng.random() < 0.5:
        ds.PresentationLUTShape = "INVERSE" if mono1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    if window_mode:
        centre, width = slope * centre_s + intercept, slope * width_s
        if window_mode == 2:
            ds.WindowCenter = [_ds(centre), _ds(slope * (maxv / 2.0) + intercept)]
            ds.WindowWidth = [_ds(width), _ds(slope * maxv)]
            ds.WindowCenterWidthExplanation = ["ANATOMY", "FULL RANGE"]
        else:
            ds.WindowCenter = _ds(centre)
            ds.WindowWidth = _ds(width)
        if window_mode == 3:
            ds.VOILUTFunction = str(rng.choice(["LINEAR", "SIGMOID"]))


# --------------------------------------------------------------------------- sets


def write_synthetic_set(
    out_dir: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    matrix: tuple[int, int] | None = None,
    compressed_share: float = 0.25,
    verify: bool = True,
) -> list[SyntheticRecord]:
    """Write ``count`` synthetic radiographs to ``out_dir`` plus ``out_dir/manifest.csv``.

    Regions are balanced (counts differ by at most one) in a seeded order; a ``compressed_share``
    of the files use lossless compressed transfer syntaxes, cycling over
    :func:`available_compressed_syntaxes`; the rest Explicit VR Little Endian. Image ``i`` uses
    ``np.random.default_rng([seed, i])``, so a seed reproduces the same pixels and UIDs.
    With ``verify`` every compressed file is read back and checked to decode to the exact stored
    values. The manifest's columns are path (absolute), region, sop_instance_uid, transfer_syntax.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0.0 <= compressed_share <= 1.0:
        raise ValueError("compressed_share must be within [0, 1]")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    order_rng = np.random.default_rng([seed, 0x5E7])
    regions = [REGIONS[i % len(REGIONS)] for i in range(count)]
    regions = [regions[i] for i in order_rng.permutation(count)]
    n_compressed = round(count * compressed_share)
    compressed_at = set(order_rng.permutation(count)[:n_compressed].tolist())
    codecs = available_compressed_syntaxes()
    if n_compressed and not codecs:
        raise RuntimeError(
            "no lossless DICOM encoder available (pylibjpeg-rle, pyjpegls, pylibjpeg-openjpeg)"
        )

    records: list[SyntheticRecord] = []
    k = 0
    for i, region in enumerate(regions):
        if i in compressed_at:
            ts = codecs[k % len(codecs)]
            k += 1
        else:
            ts = ExplicitVRLittleEndian
        ds, stored, _ = _build(region, np.random.default_rng([seed, i]), matrix, ts, i)
        path = out / f"synthetic_{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if verify and ts not in NATIVE_SYNTAXES:
            back = decode_stored(pydicom.dcmread(path))
            if back.shape != stored.shape or not np.array_equal(back, stored):
                raise RuntimeError(f"{path}: {UID(ts).name} round trip is not lossless")
        records.append(SyntheticRecord(str(path), region, str(ds.SOPInstanceUID), str(ts)))

    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "region", "sop_instance_uid", "transfer_syntax"])
        for rec in records:
            writer.writerow([rec.path, rec.region, rec.sop_instance_uid, rec.transfer_syntax])
    return records
