"""Tests of the synthetic radiograph generator (radserve.synthetic.dataset); small matrices, a few seconds."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
)

from radserve.synthetic import dataset as synthetic
from radserve.synthetic.dataset import (
    REGIONS,
    SyntheticRecord,
    available_compressed_syntaxes,
    render_region,
    synthetic_dataset,
    write_synthetic_set,
)

MATRIX = (128, 104)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticRecord]]:
    out = tmp_path_factory.mktemp("synth")
    return out, write_synthetic_set(out, 40, seed=7, matrix=MATRIX, compressed_share=0.25)


def _stored(path: str) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(path)
    return ds, synthetic.decode_stored(ds)


def test_regions_label_order() -> None:
    assert REGIONS == ("shoulder", "elbow", "hand", "pelvis", "knee")


@pytest.mark.parametrize("region", REGIONS)
def test_render_region_range(region: str) -> None:
    img = render_region(region, np.random.default_rng(3), (150, 120))
    assert img.shape == (150, 120)
    assert img.dtype == np.float32
    assert float(img.min()) >= 0.0
    assert float(img.max()) <= 1.0
    assert float(img.std()) > 0.05  # not blank


def test_unknown_region_rejected() -> None:
    with pytest.raises(ValueError):
        render_region("skull", np.random.default_rng(0), MATRIX)
    with pytest.raises(ValueError):
        synthetic_dataset("skull", np.random.default_rng(0), matrix=MATRIX)


def test_dataset_deterministic_for_seed() -> None:
    a = synthetic_dataset("hand", np.random.default_rng(11), matrix=MATRIX)
    b = synthetic_dataset("hand", np.random.default_rng(11), matrix=MATRIX)
    c = synthetic_dataset("hand", np.random.default_rng(12), matrix=MATRIX)
    assert a.PixelData == b.PixelData
    for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert a[key].value == b[key].value
        assert a[key].value != c[key].value
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert a.PixelData != c.PixelData


def test_set_deterministic_for_seed(tmp_path: Path) -> None:
    first = write_synthetic_set(tmp_path / "a", 6, seed=3, matrix=MATRIX, compressed_share=0.5)
    second = write_synthetic_set(tmp_path / "b", 6, seed=3, matrix=MATRIX, compressed_share=0.5)
    other = write_synthetic_set(tmp_path / "c", 6, seed=4, matrix=MATRIX, compressed_share=0.5)
    assert [(r.region, r.sop_instance_uid, r.transfer_syntax) for r in first] == [
        (r.region, r.sop_instance_uid, r.transfer_syntax) for r in second
    ]
    assert {r.sop_instance_uid for r in first}.isdisjoint(r.sop_instance_uid for r in other)
    for ra, rb in zip(first, second, strict=True):
        assert np.array_equal(_stored(ra.path)[1], _stored(rb.path)[1])


def test_balanced_labels_and_manifest(small_set: tuple[Path, list[SyntheticRecord]]) -> None:
    out, records = small_set
    counts = Counter(r.region for r in records)
    assert set(counts) == set(REGIONS)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert len({r.sop_instance_uid for r in records}) == len(records)
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "region", "sop_instance_uid", "transfer_syntax"]
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        assert row == {
            "path": rec.path,
            "region": rec.region,
            "sop_instance_uid": rec.sop_instance_uid,
            "transfer_syntax": rec.transfer_syntax,
        }
        assert Path(rec.path).is_file()
        assert Path(rec.path).parent == out.resolve()
        ds = pydicom.dcmread(rec.path, stop_before_pixels=True)
        assert ds.SOPInstanceUID == rec.sop_instance_uid
        assert ds.file_meta.TransferSyntaxUID == rec.transfer_syntax
        assert ds.BodyPartExamined == rec.region.upper()


def test_compressed_share(small_set: tuple[Path, list[SyntheticRecord]]) -> None:
    _, records = small_set
    compressed = [r for r in records if r.transfer_syntax != ExplicitVRLittleEndian]
    assert len(compressed) == 10
    assert {r.transfer_syntax for r in compressed} == set(available_compressed_syntaxes())


def test_attributes_valid(small_set: tuple[Path, list[SyntheticRecord]]) -> None:
    _, records = small_set
    seen: dict[str, set] = {"bits": set(), "photo": set(), "modality": set(), "window": set(), "pad": set()}
    for rec in records:
        ds, stored = _stored(rec.path)
        meta = ds.file_meta
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation)
        assert ds.Modality == ("DX" if ds.SOPClassUID == DigitalXRayImageStorageForPresentation else "CR")
        assert (ds.Rows, ds.Columns) == MATRIX == stored.shape
        assert ds.SamplesPerPixel == 1
        assert ds.BitsAllocated == 16
        assert ds.BitsStored in (12, 14, 15, 16)
        assert ds.HighBit == ds.BitsStored - 1
        assert ds.PixelRepresentation == 0
        assert stored.dtype == np.uint16
        assert int(stored.max()) < (1 << ds.BitsStored)
        assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
        shape = ds.get("PresentationLUTShape")
        if ds.Modality == "DX":
            assert ds.PresentationIntentType == "FOR PRESENTATION"
            assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, 0.0)
            assert shape is not None
        if shape is not None:
            assert shape == ("INVERSE" if ds.PhotometricInterpretation == "MONOCHROME1" else "IDENTITY")
        assert float(ds.RescaleSlope) > 0
        assert "ModalityLUTSequence" not in ds
        assert ds.BodyPartExamined in ("SHOULDER", "ELBOW", "HAND", "PELVIS", "KNEE")
        assert ds.ViewPosition in ("AP", "PA", "LL", "RL")
        assert ds.Manufacturer == "radserve synthetic"
        assert all(0.1 <= float(v) <= 5.0 for v in ds.ImagerPixelSpacing)
        if "WindowCenter" in ds:
            centres = ds.WindowCenter if ds["WindowCenter"].VM > 1 else [ds.WindowCenter]
            widths = ds.WindowWidth if ds["WindowWidth"].VM > 1 else [ds.WindowWidth]
            assert len(centres) == len(widths)
            assert all(float(w) >= 1 for w in widths)
            if len(centres) > 1:
                assert len(ds.WindowCenterWidthExplanation) == len(centres)
            # the first window lies within the modality value range of the image
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            lo, hi = intercept + slope * float(stored.min()), intercept + slope * float(stored.max())
            assert lo <= float(centres[0]) <= hi
            seen["window"].add(f"{len(centres)}{ds.get('VOILUTFunction', '')}")
        else:
            seen["window"].add("none")
        if "PixelPaddingValue" in ds:
            pad = ds.PixelPaddingValue
            assert pad in (0, (1 << ds.BitsStored) - 1)
            padded = stored == pad
            assert 0 < padded.mean() < 0.6
            centre = stored[MATRIX[0] // 2 - 5 : MATRIX[0] // 2 + 5, MATRIX[1] // 2 - 5 : MATRIX[1] // 2 + 5]
            assert not np.any(centre == pad)
            seen["pad"].add(True)
        seen["bits"].add(ds.BitsStored)
        seen["photo"].add(ds.PhotometricInterpretation)
        seen["modality"].add(ds.Modality)
    assert seen["bits"] == {12, 14, 15, 16}
    assert seen["photo"] == {"MONOCHROME1", "MONOCHROME2"}
    assert seen["modality"] == {"CR", "DX"}
    assert {"none", "1", "2"} <= seen["window"]
    assert any("SIGMOID" in w or "LINEAR" in w for w in seen["window"])
    assert seen["pad"] == {True}


def test_strict_pydicom_validation(tmp_path: Path) -> None:
    """Every value passes pydicom's VR validation when writing in RAISE mode."""
    config = pydicom.config.settings
    old = config.writing_validation_mode
    config.writing_validation_mode = pydicom.config.RAISE
    try:
        for i, region in enumerate(REGIONS):
            ds = synthetic_dataset(region, np.random.default_rng(i), matrix=MATRIX)
            ds.save_as(tmp_path / f"{region}.dcm", enforce_file_format=True)
    finally:
        config.writing_validation_mode = old


def test_compressed_files_decode_losslessly(tmp_path: Path) -> None:
    codecs = available_compressed_syntaxes()
    assert len(codecs) >= 3  # RLE, JPEG-LS and JPEG 2000 at least
    for ts in codecs:
        for i in range(2):
            region = REGIONS[i]
            ds = synthetic_dataset(region, np.random.default_rng([42, i]), matrix=MATRIX, transfer_syntax=ts)
            _, native, _ = synthetic._build(region, np.random.default_rng([42, i]), MATRIX, ts, None)
            path = tmp_path / f"{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            back = pydicom.dcmread(path)
            assert back.file_meta.TransferSyntaxUID == ts
            assert back["PixelData"].is_undefined_length
            if ts == JPEGLosslessSV1:
                import imagecodecs

                frame = next(pydicom.encaps.generate_frames(back.PixelData, number_of_frames=1))
                assert frame[:2] == b"\xff\xd8" and b"\xff\xc3" in frame  # SOF3: lossless
                decoded = imagecodecs.jpeg8_decode(frame)
            else:
                decoded = back.pixel_array
            assert decoded.dtype == np.uint16
            assert np.array_equal(decoded, native)
            assert np.array_equal(synthetic.decode_stored(back), native)


@pytest.mark.parametrize("seed", range(8))
def test_stored_values_follow_attenuation(seed: int) -> None:
    """MONOCHROME2 stores the attenuation increasing, MONOCHROME1 inverted (bone bright after display)."""
    region = REGIONS[seed % len(REGIONS)]
    img = render_region(region, np.random.default_rng(seed), MATRIX)
    ds = synthetic_dataset(region, np.random.default_rng(seed), matrix=MATRIX)
    stored = ds.pixel_array.astype(np.float64)
    keep = np.ones(MATRIX, bool)
    if "PixelPaddingValue" in ds:
        keep = stored != ds.PixelPaddingValue
    x, y = img[keep].astype(np.float64), stored[keep]
    slope, offset = np.polyfit(x, y, 1)
    assert np.abs(y - (slope * x + offset)).max() <= 1.0  # exact linear map up to rounding
    if ds.PhotometricInterpretation == "MONOCHROME1":
        assert slope < 0
    else:
        assert slope > 0
    # after the display pipeline's inversion of MONOCHROME1, the brightest pixels are the most attenuating
    display = stored if ds.PhotometricInterpretation == "MONOCHROME2" else float(stored.max()) - stored
    assert np.corrcoef(display[keep], x)[0, 1] > 0.999


def test_both_photometric_interpretations_seen() -> None:
    seen = {
        synthetic_dataset("knee", np.random.default_rng(s), matrix=(64, 64)).PhotometricInterpretation
        for s in range(12)
    }
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def _region_features(split: int, per_region: int) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for r, region in enumerate(REGIONS):
        for k in range(per_region):
            img = render_region(region, np.random.default_rng([split, r, k]), (96, 80))
            feats.append(cv2.resize(img, (20, 24), interpolation=cv2.INTER_AREA).ravel())
            labels.append(r)
    return np.asarray(feats), np.asarray(labels)


def test_regions_differ() -> None:
    """Regions have different layouts (mean images differ; a nearest-centroid classifier on 24x20
    thumbnails is well above chance) but are not separable by one global statistic (mean intensity)."""
    train_x, train_y = _region_features(0, 30)
    test_x, test_y = _region_features(1, 12)
    centroids = np.stack([train_x[train_y == r].mean(0) for r in range(len(REGIONS))])
    pair = [float(np.abs(centroids[a] - centroids[b]).mean()) for a in range(5) for b in range(a + 1, 5)]
    assert min(pair) > 0.04
    predicted = np.argmin(((test_x[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    layout_accuracy = float((predicted == test_y).mean())
    means = train_x.mean(1)
    mean_centroids = np.array([means[train_y == r].mean() for r in range(len(REGIONS))])
    predicted = np.argmin(np.abs(test_x.mean(1)[:, None] - mean_centroids[None]), axis=1)
    intensity_accuracy = float((predicted == test_y).mean())
    assert layout_accuracy >= 0.5
    assert intensity_accuracy <= 0.6
    assert layout_accuracy > intensity_accuracy


def test_synthetic_identity(small_set: tuple[Path, list[SyntheticRecord]]) -> None:
    _, records = small_set
    names = set()
    for index, rec in enumerate(records):
        ds = pydicom.dcmread(rec.path, stop_before_pixels=True)
        assert str(ds.PatientName) == f"SYNTHETIC^{index + 1:04d}"
        assert ds.PatientID.startswith("SYN")
        assert ds.AccessionNumber.startswith("SYN")
        assert ds.PatientBirthDate == ""
        assert ds.ReferringPhysicianName == ""
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.InstitutionName == "radserve synthetic"
        assert "OtherPatientIDs" not in ds and "PatientAddress" not in ds
        assert ds.StudyInstanceUID.startswith(pydicom.uid.PYDICOM_ROOT_UID)
        assert ds.PatientAge.endswith("Y")
        names.add(str(ds.PatientName))
    assert len(names) == len(records)


def test_default_matrix_is_realistic() -> None:
    ds = synthetic_dataset("pelvis", np.random.default_rng(5))
    assert 2000 <= ds.Rows <= 2500
    assert 1700 <= ds.Columns <= 2500
    assert all(0.1 <= float(v) <= 0.15 for v in ds.ImagerPixelSpacing)
    assert len(ds.PixelData) == ds.Rows * ds.Columns * 2
