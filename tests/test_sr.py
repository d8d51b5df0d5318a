"""DICOM SR of classification results: written with highdicom, read back with pydicom."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.sr import ComprehensiveSR
from pydicom.dataset import Dataset
from pydicom.uid import ComprehensiveSRStorage, MultiFrameGrayscaleWordSecondaryCaptureImageStorage

from radserve.client.results import ResultRow
from radserve.client.sr import CODING_SCHEME, read_source_header, sr_series_uid, write_classification_sr
from radserve.errors import InputError
from radserve.model_card import ModelCard
from radserve.synthetic.dataset import REGIONS, synthetic_dataset

PROBABILITIES = {"shoulder": 0.015, "elbow": 0.025, "hand": 0.04, "pelvis": 0.12, "knee": 0.8}
CARD = ModelCard(
    name="regions-resnet18",
    architecture="resnet18",
    labels=REGIONS,
    input_size=(224, 224),
    precision="fp16",
    checkpoint_sha256="ab" * 32,
)


def _source(tmp_path: Path, name: str = "source.dcm", seed: int = 0) -> tuple[Path, Dataset]:
    ds = synthetic_dataset("knee", np.random.default_rng(seed), matrix=(64, 52))
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path, ds


def _row(path: Path, ds: Dataset, *, frame: int | None = None) -> ResultRow:
    return ResultRow(
        path=str(path),
        status="ok",
        sop_instance_uid=str(ds.SOPInstanceUID),
        frame=frame,
        model=CARD.name,
        label="knee",
        score=PROBABILITIES["knee"],
        probabilities=dict(PROBABILITIES),
        latency_ms=3.5,
    )


def _walk(items: pydicom.Sequence) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _name(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return (code.CodingSchemeDesignator, code.CodeValue)


def _text(sr: Dataset, scheme: str, value: str) -> list[str]:
    return [
        item.TextValue
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "TEXT" and _name(item) == (scheme, value)
    ]


def _image_refs(sr: Dataset) -> list[Dataset]:
    return [item.ReferencedSOPSequence[0] for item in _walk(sr.ContentSequence) if item.ValueType == "IMAGE"]


def test_sr_round_trip(tmp_path: Path) -> None:
    path, ds = _source(tmp_path)
    source = read_source_header(path)
    assert "PixelData" not in source

    written = write_classification_sr(_row(path, ds), CARD, source, tmp_path / "sr", model_version="7")

    assert written.parent == tmp_path / "sr"
    assert not list(written.parent.glob("*.part"))
    sr = pydicom.dcmread(written, force=False)
    assert written.name == f"{sr.SOPInstanceUID}.dcm"
    assert sr.file_meta.MediaStorageSOPClassUID == ComprehensiveSRStorage
    assert sr.SOPClassUID == ComprehensiveSRStorage
    assert sr.Modality == "SR"
    # same study and patient, a series and instance of its own
    assert sr.StudyInstanceUID == ds.StudyInstanceUID
    assert sr.PatientID == ds.PatientID
    assert sr.PatientName == ds.PatientName
    assert sr.SeriesInstanceUID == sr_series_uid(ds.StudyInstanceUID, CARD.name, "7")
    assert sr.SeriesInstanceUID != ds.SeriesInstanceUID
    assert sr.SOPInstanceUID not in (ds.SOPInstanceUID, sr.SeriesInstanceUID)
    # equipment and dates
    assert sr.Manufacturer == "radserve"
    assert sr.ManufacturerModelName == CARD.name
    model_version, radserve_version = sr.SoftwareVersions
    assert model_version == "7"
    assert radserve_version.startswith("radserve ")
    assert sr.ContentDate and sr.ContentTime
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence] == [CODING_SCHEME]

    # evidence: the source, in the same study
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == ds.StudyInstanceUID
    (series,) = evidence.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == ds.SeriesInstanceUID
    (instance,) = series.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == ds.SOPClassUID

    # content: algorithm, finding with its probability and source, one probability per class
    assert sr.ValueType == "CONTAINER"
    assert _text(sr, "DCM", "111001") == [CARD.name]
    (version,) = _text(sr, "DCM", "111003")
    assert version == "7, resnet18, fp16"
    assert f"checkpoint_sha256={CARD.checkpoint_sha256}" in _text(sr, "DCM", "111002")
    finding = next(item for item in _walk(sr.ContentSequence) if _name(item) == ("DCM", "121071"))
    assert finding.TextValue == "knee"
    children = {item.ValueType: item for item in finding.ContentSequence}
    assert children["NUM"].MeasuredValueSequence[0].FloatingPointValue == PROBABILITIES["knee"]
    assert children["NUM"].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "{ratio}"
    assert children["IMAGE"].RelationshipType == "INFERRED FROM"
    (reference,) = _image_refs(sr)
    assert reference.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == ds.SOPClassUID
    assert "ReferencedFrameNumber" not in reference
    probabilities = {
        item.ContentSequence[0].TextValue: item.MeasuredValueSequence[0].FloatingPointValue
        for item in _walk(sr.ContentSequence)
        if item.ValueType == "NUM" and _name(item) == (CODING_SCHEME, "RS0002")
    }
    assert probabilities == PROBABILITIES
    assert "PixelData" not in sr
    # highdicom parses its own content tree back
    parsed = ComprehensiveSR.from_dataset(sr)
    assert parsed.get_evidence() == [
        (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID)
    ]


def test_sr_series_is_shared_per_study_and_model(tmp_path: Path) -> None:
    path, ds = _source(tmp_path)
    first = pydicom.dcmread(write_classification_sr(_row(path, ds), CARD, ds, tmp_path / "sr"))
    second = pydicom.dcmread(write_classification_sr(_row(path, ds), CARD, ds, tmp_path / "sr"))
    other = pydicom.dcmread(
        write_classification_sr(_row(path, ds), CARD.replace(name="other"), ds, tmp_path / "sr")
    )
    assert first.SeriesInstanceUID == second.SeriesInstanceUID != other.SeriesInstanceUID
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert first.SoftwareVersions.startswith("radserve ")  # no model version: radserve's alone
    assert len(list((tmp_path / "sr").glob("*.dcm"))) == 3


def test_multiframe_reference_carries_frame_number(tmp_path: Path) -> None:
    path, ds = _multiframe_source(tmp_path)
    source = read_source_header(path)

    sr = pydicom.dcmread(write_classification_sr(_row(path, ds, frame=2), CARD, source, tmp_path / "sr"))

    (reference,) = _image_refs(sr)
    assert reference.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    assert int(reference.ReferencedFrameNumber) == 2
    assert sr.InstanceNumber == 2
    with pytest.raises(InputError) as caught:
        write_classification_sr(_row(path, ds, frame=4), CARD, source, tmp_path / "sr")
    assert caught.value.reason == "sr_failed"


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_source_without_uids_is_refused(tmp_path: Path, keyword: str) -> None:
    path, ds = _source(tmp_path)
    row = _row(path, ds)
    delattr(ds, keyword)
    with pytest.raises(InputError) as caught:
        write_classification_sr(row, CARD, ds, tmp_path / "sr")
    assert caught.value.reason == "sr_failed"
    assert keyword in str(caught.value)
    assert not (tmp_path / "sr").exists()


def test_source_is_not_changed_and_patient_names_stay_out_of_warnings(tmp_path: Path) -> None:
    path, ds = _source(tmp_path)
    ds.PatientName = "Secretname"  # one component: highdicom would warn, quoting it
    del ds.PatientSex
    del ds.AccessionNumber
    before = set(ds.keys())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sr = pydicom.dcmread(write_classification_sr(_row(path, ds), CARD, ds, tmp_path / "sr"))
    assert not [w for w in caught if "Secretname" in str(w.message)]
    assert set(ds.keys()) == before  # the caller's dataset is untouched
    assert "PixelData" in ds
    assert sr.PatientName == "Secretname"
    assert sr.PatientSex == ""
    assert sr.AccessionNumber == ""


def test_rows_that_are_not_results_are_refused(tmp_path: Path) -> None:
    path, ds = _source(tmp_path)
    error_row = ResultRow(path=str(path), status="error", error_reason="decode_failed", error="x")
    with pytest.raises(ValueError, match="ok result"):
        write_classification_sr(error_row, CARD, ds, tmp_path / "sr")
    _, other = _source(tmp_path, "other.dcm", seed=1)
    with pytest.raises(ValueError, match="SOP instance"):
        write_classification_sr(_row(path, other), CARD, ds, tmp_path / "sr")


def test_read_source_header_errors(tmp_path: Path) -> None:
    not_dicom = tmp_path / "notes.txt"
    not_dicom.write_text("hello")
    with pytest.raises(InputError) as caught:
        read_source_header(not_dicom)
    assert caught.value.reason == "not_dicom"
    with pytest.raises(InputError) as caught:
        read_source_header(tmp_path / "missing.dcm")
    assert caught.value.reason == "unreadable"


def _multiframe_source(tmp_path: Path) -> tuple[Path, Dataset]:
    """A header-only multi-frame source (3 frames): all an SR needs of it."""
    _, ds = _source(tmp_path)
    del ds.PixelData
    ds.SOPClassUID = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames = 3
    path = tmp_path / "multiframe.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
@pytest.mark.parametrize("frame", [None, 2])
def test_dciodvfy_accepts_the_sr(tmp_path: Path, frame: int | None) -> None:
    path, ds = _multiframe_source(tmp_path) if frame else _source(tmp_path)
    source = read_source_header(path)
    written = write_classification_sr(
        _row(path, ds, frame=frame), CARD, source, tmp_path / "sr", model_version="7"
    )
    result = subprocess.run(["dciodvfy", str(written)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)
