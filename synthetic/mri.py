"""Synthetic lumbar spine MRI studies: sagittal T1W and T2W series with one vertebral lesion.

A study is several series of MR Image Storage objects (16 bits allocated, 12 stored): a sagittal T1W
TSE and a sagittal T2W TSE sharing their slice positions, optionally an unrelated axial series. Each
slice carries ImageOrientationPatient / ImagePositionPatient / SliceLocation, RepetitionTime /
EchoTime / ScanningSequence / SequenceName and a SeriesDescription naming T1 or T2. One vertebral
body holds the lesion (label :data:`MRI_LABELS`), centred on the mid-sagittal slice:

- ``benign`` (osteoporotic compression): wedge-shaped height loss, a band under the superior
  endplate dark on T1 and bright on T2, the rest of the marrow spared;
- ``malignant``: height loss, the whole body dark on T1 and bright, mottled on T2, the posterior
  wall bulging into the canal, the pedicles involved.

Deterministic for an rng; files and manifest by :func:`write_mri_set`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from radserve.synthetic._codecs import set_pixels

MRI_LABELS: tuple[str, ...] = ("benign", "malignant")

# tissue -> (T1W, T2W) relative signal
_TISSUES = {
    "air": (0.0, 0.0),
    "fat": (0.92, 0.62),
    "muscle": (0.30, 0.22),
    "viscera": (0.42, 0.50),
    "marrow": (0.68, 0.42),
    "disc": (0.36, 0.78),
    "cortex": (0.08, 0.08),
    "csf": (0.12, 0.95),
    "cord": (0.46, 0.40),
    "benign_band": (0.22, 0.82),
    "tumour": (0.17, 0.74),
}
_INDEX = {name: i for i, name in enumerate(_TISSUES)}
_SEQUENCES = {  # TR ms, TE ms, SequenceName, SeriesDescription
    "T1": (550.0, 11.0, "*tse2d1_3", "T1 TSE SAG"),
    "T2": (3600.0, 98.0, "*tse2d1_17", "T2 TSE SAG"),
}
_SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run posterior, columns inferior: normal along -x
_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_INSET = np.array([[2, 2], [-2, 2], [-2, -2], [2, -2]])  # marrow inside the cortex, pixels
_BAND_INSET = np.array([[2, 3], [-2, 3], [-2, 0], [2, 0]])


@dataclass(frozen=True)
class MriStudy:
    """One synthetic study: its datasets (every series) and the ground truth."""

    label: str
    study_instance_uid: str
    lesion_slice: int  # index along the slice normal (ascending) of the lesion's centre
    lesion_level: int  # vertebra holding the lesion, counted from the top of the field
    datasets: tuple[Dataset, ...]


def _label_map(matrix: tuple[int, int], x_mm: float, spine: dict, label: str) -> np.ndarray:
    """Tissue indices of one sagittal slice at ``x_mm`` from the midline."""
    rows, cols = matrix
    tissue = np.full(matrix, _INDEX["viscera"], np.uint8)
    tissue[:, : int(0.06 * cols)] = _INDEX["fat"]
    tissue[:, int(0.94 * cols) :] = _INDEX["fat"]
    tissue[:, int(0.62 * cols) : int(0.94 * cols)] = _INDEX["muscle"]
    cx, half_w, height, disc = (
        spine["cx"] * cols,
        spine["half_w"] * cols,
        spine["height"] * rows,
        spine["disc"] * rows,
    )
    lateral = abs(x_mm)
    canal_front = cx + half_w + 0.01 * cols
    canal_back = canal_front + 0.07 * cols
    if lateral < 9.0:  # thecal sac and cord in the middle slices, pedicles beside them
        cv2.rectangle(tissue, (round(canal_front), 0), (round(canal_back), rows), _INDEX["csf"], -1)
        cord_w = 0.025 * cols
        cord_mid = (canal_front + canal_back) / 2
        cv2.rectangle(
            tissue,
            (round(cord_mid - cord_w), 0),
            (round(cord_mid + cord_w), round(0.35 * rows)),
            _INDEX["cord"],
            -1,
        )
    body_scale = max(0.0, 1.0 - (lateral / spine["body_half_x"]) ** 2) ** 0.5
    top = spine["top"] * rows
    for level in range(spine["levels"]):
        y0 = top + level * (height + disc)
        lesion = level == spine["lesion_level"] and lateral <= spine["lesion_half_x"]
        pedicle = lateral >= 7.0 and lateral < spine["body_half_x"] * 0.8
        if pedicle:
            fill = _INDEX["tumour"] if lesion and label == "malignant" else _INDEX["marrow"]
            cv2.rectangle(
                tissue,
                (round(canal_front), round(y0 + 0.2 * height)),
                (round(canal_back), round(y0 + 0.6 * height)),
                fill,
                -1,
            )
        if body_scale <= 0.05:
            continue
        w = half_w * body_scale
        loss = spine["height_loss"] if level == spine["lesion_level"] else 0.0
        front_top = y0 + height * loss * (1.6 if label == "benign" else 1.0)
        back_top = y0 + height * loss * (0.4 if label == "benign" else 1.0)
        bottom = y0 + height
        body = np.array([[cx - w, front_top], [cx + w, back_top], [cx + w, bottom], [cx - w, bottom]])
        cv2.fillPoly(tissue, [np.round(body).astype(np.int32)], _INDEX["cortex"])
        cv2.fillPoly(tissue, [np.round(body + _INSET).astype(np.int32)], _INDEX["marrow"])
        if lesion and label == "benign":
            band = body.copy()
            band[2:, 1] = np.minimum(band[2:, 1], (front_top + back_top) / 2 + 0.3 * height)
            cv2.fillPoly(
                tissue,
                [np.round(band + _BAND_INSET).astype(np.int32)],
                _INDEX["benign_band"],
            )
        elif lesion:
            cv2.fillPoly(
                tissue,
                [np.round(body + _INSET).astype(np.int32)],
                _INDEX["tumour"],
            )
            bulge = (round(cx + w), round((back_top + bottom) / 2))
            cv2.ellipse(
                tissue, bulge, (round(0.035 * cols), round(0.3 * height)), 0, -90, 90, _INDEX["tumour"], -1
            )
        if bottom + disc < rows:
            cv2.rectangle(
                tissue,
                (round(cx - w), round(bottom + 1)),
                (round(cx + w), round(bottom + disc - 1)),
                _INDEX["disc"],
                -1,
            )
    return tissue


def _signal(tissue: np.ndarray, sequence: str, rng: np.random.Generator, gain: float) -> np.ndarray:
    """Stored values (uint16) of one slice: tissue signal, blur, coil shading, Rician noise."""
    column = 0 if sequence == "T1" else 1
    table = np.array([values[column] for values in _TISSUES.values()], np.float32)
    image = table[tissue]
    mottled = tissue == _INDEX["tumour"]
    if sequence == "T2" and mottled.any():
        image[mottled] *= (
            1.0
            + 0.25
            * cv2.GaussianBlur(rng.standard_normal(tissue.shape).astype(np.float32), (0, 0), 2)[mottled]
        )
    image = cv2.GaussianBlur(image, (0, 0), 0.8)
    rows, cols = tissue.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    image *= 1.15 - 0.3 * ((xx / cols - 0.8) ** 2 + (yy / rows - 0.5) ** 2)
    sigma = 0.025
    real = image + rng.normal(0, sigma, tissue.shape)
    imaginary = rng.normal(0, sigma, tissue.shape)
    return np.clip(np.sqrt(real**2 + imaginary**2) * gain, 0, 4095).astype(np.uint16)


def _spine(rng: np.random.Generator, label: str) -> dict:
    levels = int(rng.integers(5, 7))
    return {
        "levels": levels,
        "lesion_level": int(rng.integers(1, levels - 1)),
        "cx": rng.uniform(0.36, 0.44),
        "half_w": rng.uniform(0.085, 0.11),
        "height": rng.uniform(0.10, 0.12),
        "disc": rng.uniform(0.03, 0.045),
        "top": rng.uniform(0.02, 0.08),
        "body_half_x": rng.uniform(19.0, 24.0),
        "lesion_half_x": rng.uniform(9.0, 15.0),
        "height_loss": rng.uniform(0.15, 0.35) if label == "benign" else rng.uniform(0.05, 0.3),
    }


def mri_study(
    label: str,
    rng: np.random.Generator,
    *,
    slices: int = 11,
    matrix: tuple[int, int] = (192, 192),
    extra_series: bool = False,
    number: int = 1,
) -> MriStudy:
    """One synthetic study of ``label``; ``extra_series`` adds an unrelated axial T2 series."""
    if label not in MRI_LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {MRI_LABELS}")
    spine = _spine(rng, label)
    spacing = float(rng.uniform(3.5, 4.5))
    pixel = float(rng.uniform(260.0, 300.0)) / matrix[1]
    offset = float(rng.uniform(-1.0, 1.0))
    xs = [(i - (slices - 1) / 2) * spacing + offset for i in range(slices)]
    uid = lambda what: generate_uid(entropy_srcs=[what, *map(str, rng.integers(0, 2**63, size=2))])  # noqa: E731
    study_uid, frame_uid = uid("study"), uid("frame")
    day = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 2500)))
    common = {"study": study_uid, "frame": frame_uid, "date": day.strftime("%Y%m%d"), "number": number}
    datasets: list[Dataset] = []
    for series_number, sequence in enumerate(("T1", "T2"), start=1):
        gain = float(rng.uniform(1500.0, 3500.0))
        series_uid = uid(sequence)
        for index, x in enumerate(xs):
            tissue = _label_map(matrix, x - offset, spine, label)
            position = (x, -matrix[1] * pixel / 2, matrix[0] * pixel / 2)
            stored = _signal(tissue, sequence, rng, gain)
            datasets.append(
                _slice(
                    stored,
                    sequence,
                    series_uid,
                    series_number,
                    index,
                    _SAGITTAL,
                    position,
                    pixel,
                    spacing,
                    common,
                    uid,
                )
            )
    if extra_series:
        series_uid = uid("axial")
        for index in range(3):
            stored = _signal(np.full(matrix, _INDEX["muscle"], np.uint8), "T2", rng, 2000.0)
            position = (-matrix[1] * pixel / 2, -matrix[0] * pixel / 2, 40.0 - 5.0 * index)
            common_axial = common | {"description": "AX T2 TSE"}
            datasets.append(
                _slice(stored, "T2", series_uid, 3, index, _AXIAL, position, pixel, 5.0, common_axial, uid)
            )
    # ascending along the sagittal normal (-x) is descending x: the lesion's centre is at x = offset
    lesion = slices - 1 - min(range(slices), key=lambda i: abs(xs[i] - offset))
    return MriStudy(label, str(study_uid), lesion, spine["lesion_level"], tuple(datasets))


def _slice(
    stored: np.ndarray,
    sequence: str,
    series_uid: str,
    series_number: int,
    index: int,
    orientation: tuple[float, ...],
    position: tuple[float, float, float],
    pixel: float,
    spacing: float,
    common: dict,
    uid,
) -> Dataset:
    tr, te, sequence_name, description = _SEQUENCES[sequence]
    sop_uid = uid("sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = common["date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.Modality, ds.Manufacturer, ds.ReferringPhysicianName = "MR", "radserve synthetic", ""
    ds.PatientName, ds.PatientID = f"SYNTHETIC^{common['number']:04d}", f"SYNMR{common['number']:05d}"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDescription, ds.SeriesDescription = "MR LUMBAR SPINE", common.get("description", description)
    ds.BodyPartExamined = "LSPINE"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (
        common["study"],
        series_uid,
        common["frame"],
    )
    ds.StudyID, ds.AccessionNumber = f"{common['number']:04d}", f"SYNMR{common['number']:07d}"
    ds.SeriesNumber, ds.InstanceNumber = series_number, index + 1
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", ["SK", "SP"], ""
    ds.MRAcquisitionType, ds.SequenceName = "2D", sequence_name
    ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = f"{tr:g}", f"{te:g}", 3 if sequence == "T1" else 17
    ds.MagneticFieldStrength, ds.ImagingFrequency = "1.5", "63.6"
    ds.SliceThickness, ds.SpacingBetweenSlices = f"{spacing * 0.9:.3f}", f"{spacing:.3f}"
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    normal = np.cross(orientation[:3], orientation[3:])
    ds.SliceLocation = f"{float(np.dot(normal, position)):.4f}"
    ds.PixelSpacing = [f"{pixel:.5f}", f"{pixel:.5f}"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    set_pixels(ds, stored, ExplicitVRLittleEndian)
    return ds


def write_mri_set(
    out_dir: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    slices: int = 11,
    matrix: tuple[int, int] = (192, 192),
    extra_series_share: float = 0.0,
) -> list[MriStudy]:
    """Write ``count`` studies (labels alternating in a seeded order) under ``out_dir/study_NNNN/``.

    ``out_dir/manifest.csv``: folder, study_instance_uid, label, lesion_slice, lesion_level, series.
    Study ``i`` uses ``np.random.default_rng([seed, i])``.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng([seed, 0x3A1]).permutation(count)
    studies = []
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["folder", "study_instance_uid", "label", "lesion_slice", "lesion_level", "series"])
        for i in range(count):
            rng = np.random.default_rng([seed, i])
            extra = bool(rng.random() < extra_series_share)
            study = mri_study(
                MRI_LABELS[int(order[i]) % 2],
                rng,
                slices=slices,
                matrix=matrix,
                extra_series=extra,
                number=i + 1,
            )
            folder = out / f"study_{i:04d}"
            folder.mkdir(exist_ok=True)
            for ds in study.datasets:
                ds.save_as(
                    folder / f"s{ds.SeriesNumber}_{ds.InstanceNumber:03d}.dcm", enforce_file_format=True
                )
            series = len({str(ds.SeriesInstanceUID) for ds in study.datasets})
            writer.writerow(
                [
                    folder,
                    study.study_instance_uid,
                    study.label,
                    study.lesion_slice,
                    study.lesion_level,
                    series,
                ]
            )
            studies.append(study)
    return studies
