"""DICOM SR of classification results: written with highdicom, read back with pydicom."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.sr import ComprehensiveSR
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ComprehensiveSRStorage, MultiFrameGrayscaleWordSecondaryCaptureImageStorage

from radserve.client._sr_content import DECISION, THRESHOLD, label_concept
from radserve.client.results import ResultRow
from radserve.client.sr import CODING_SCHEME, read_source_header, sr_series_uid, write_classification_sr
from radserve.errors import InputError
from radserve.model_card import ModelCard, OperatingPoint
from radserve.synthetic.dataset import REGIONS, synthetic_dataset
from radserve.systems import SYSTEMS, finding_code
from tests._dicom_factory import HIGHDICOM_DX

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

    # content: a TID 1500 Measurement Report, read back with highdicom
    assert sr.ValueType == "CONTAINER"
    (template,) = sr.ContentTemplateSequence
    assert (template.MappingResource, template.TemplateIdentifier) == ("DCMR", "1500")
    assert _name(sr) == ("DCM", "126000")  # Imaging Measurement Report
    assert _text(sr, "DCM", "111001") == [CARD.name]
    (version,) = _text(sr, "DCM", "111003")
    assert version == "7, resnet18, fp16"
    assert f"checkpoint_sha256={CARD.checkpoint_sha256}" in _text(sr, "DCM", "111002")
    parsed = ComprehensiveSR.from_dataset(sr)
    assert parsed.get_evidence() == [
        (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID)
    ]
    report = parsed.content
    (observer,) = report.get_observer_contexts()
    assert observer.observer_type == codes.DCM.Device
    (group,) = report.get_image_measurement_groups()
    assert (group.finding_type.scheme_designator, group.finding_type.value) == ("SCT", "72696002")  # Knee
    assert {m.name: m.value for m in group.get_measurements()} == {
        label_concept(label): p for label, p in PROBABILITIES.items()
    }
    assert all(m.unit.value == "{ratio}" for m in group.get_measurements())
    assert not group.get_qualitative_evaluations()  # no operating points: no decision
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == ds.SOPInstanceUID
    assert source.referenced_sop_class_uid == ds.SOPClassUID
    assert group.tracking_uid and group.tracking_identifier == f"{CARD.name} classification"
    # no Image Library (111028, optional in TID 1500): the synthetic source has no Patient Orientation
    assert not [item for item in sr.ContentSequence if _name(item) == ("DCM", "111028")]
    assert "PixelData" not in sr


def test_sr_of_highdicoms_dx_image_lists_it_in_the_image_library(tmp_path: Path) -> None:
    source = read_source_header(Path(HIGHDICOM_DX))
    row = replace(_row(Path(HIGHDICOM_DX), source), sop_instance_uid=str(source.SOPInstanceUID))
    written = write_classification_sr(row, CARD, source, tmp_path / "sr")
    library = next(
        item for item in pydicom.dcmread(written).ContentSequence if _name(item) == ("DCM", "111028")
    )
    (image,) = _image_refs(library)
    assert image.ReferencedSOPInstanceUID == source.SOPInstanceUID
    _dciodvfy_clean(written)


def test_sr_decision_threshold_and_boxes(tmp_path: Path) -> None:
    """The decision as a coded qualitative evaluation, its threshold as a measurement; each box a
    TID 1410 planar ROI on the source image with its own tracking identifier and coded finding."""
    path, ds = _source(tmp_path)
    card = CARD.replace(operating_points={"knee": OperatingPoint(0.5)})
    boxes = [
        {"x0": 1.0, "y0": 2.0, "x1": 10.0, "y1": 12.0, "score": 0.9, "label": "knee"},
        {"x0": 20.0, "y0": 5.0, "x1": 30.0, "y1": 9.0, "score": 0.6, "label": "knee"},
    ]
    row = replace(_row(path, ds), decision="knee", threshold=0.5, boxes=boxes)
    report = ComprehensiveSR.from_dataset(
        pydicom.dcmread(write_classification_sr(row, card, ds, tmp_path / "sr", model_version="7"))
    ).content
    (group,) = report.get_image_measurement_groups()
    (decision,) = group.get_qualitative_evaluations()
    assert decision.name == DECISION and decision.value == label_concept("knee")
    assert group.get_measurements(name=THRESHOLD)[0].value == 0.5
    rois = report.get_planar_roi_measurement_groups()
    assert len({roi.tracking_uid for roi in rois}) == len(boxes) == len(rois)
    for roi, box in zip(rois, boxes, strict=True):
        assert roi.finding_type == label_concept("knee")
        (score,) = roi.get_measurements()
        assert score.value == box["score"]
        corners = roi.roi.value
        assert corners[0].tolist() == [box["x0"], box["y0"]] and corners[2].tolist() == [box["x1"], box["y1"]]
        assert _image_refs(roi.roi)[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
    negative = replace(_row(path, ds), decision="negative", threshold=0.9)
    (group,) = ComprehensiveSR.from_dataset(
        pydicom.dcmread(write_classification_sr(negative, card, ds, tmp_path / "sr"))
    ).content.get_image_measurement_groups()
    assert group.get_qualitative_evaluations()[0].value.meaning == "Negative"


def test_router_rows_get_both_stages(tmp_path: Path) -> None:
    path, ds = _source(tmp_path)
    first = ModelCard(name="region", architecture="resnet18", labels=("hand", "knee"), input_size=(64, 64))
    row = replace(
        _row(path, ds),
        router="router",
        first_stage_model="region",
        first_stage_version="3",
        first_stage_label="knee",
        first_stage_score=0.7,
        first_stage_probabilities={"hand": 0.3, "knee": 0.7},
    )
    report = ComprehensiveSR.from_dataset(
        pydicom.dcmread(write_classification_sr(row, CARD, ds, tmp_path / "sr", first_stage=first))
    ).content
    routing, answer = report.get_image_measurement_groups()
    assert routing.tracking_identifier == "region classification"
    assert {m.name.meaning: m.value for m in routing.get_measurements()} == {"Hand": 0.3, "Knee": 0.7}
    assert answer.tracking_identifier == f"{CARD.name} classification"
    assert routing.tracking_uid != answer.tracking_uid


def test_labels_without_a_standard_code_get_documented_private_codes() -> None:
    assert finding_code("fracture") == ("SCT", "125605004", "Fracture of bone")
    scheme, value, meaning = finding_code("degenerative_spondylolisthesis")
    assert (scheme, meaning) == (CODING_SCHEME, "degenerative_spondylolisthesis") and len(value) <= 16
    assert finding_code("degenerative_spondylolisthesis") == (scheme, value, meaning)  # stable
    assert value != finding_code("spondylolysis")[1]
    labels = {label for system in SYSTEMS.values() for label in system.labels}
    assert len({finding_code(label) for label in labels}) == len(labels)  # no two labels share a code


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

    (group,) = ComprehensiveSR.from_dataset(sr).content.get_image_measurement_groups()
    (reference,) = group.source_images
    assert reference.referenced_sop_instance_uid == ds.SOPInstanceUID
    assert reference.referenced_frame_numbers == [2]
    assert {r.ReferencedSOPInstanceUID for r in _image_refs(sr)} == {ds.SOPInstanceUID}
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
@pytest.mark.parametrize("case", ["single-frame", "frame 2", "decision and boxes", "router"])
def test_dciodvfy_accepts_the_sr(tmp_path: Path, case: str) -> None:
    path, ds = _multiframe_source(tmp_path) if case == "frame 2" else _source(tmp_path)
    source = read_source_header(path)
    row, card, first = _row(path, ds, frame=2 if case == "frame 2" else None), CARD, None
    if case == "decision and boxes":
        card = CARD.replace(operating_points={"knee": OperatingPoint(0.5)})
        box = {"x0": 1.0, "y0": 2.0, "x1": 10.0, "y1": 12.0, "score": 0.9, "label": "knee"}
        row = replace(row, decision="knee", threshold=0.5, boxes=[box])
    if case == "router":
        first = ModelCard(
            name="region", architecture="resnet18", labels=("hand", "knee"), input_size=(64, 64)
        )
        row = replace(row, first_stage_label="knee", first_stage_probabilities={"hand": 0.3, "knee": 0.7})
    written = write_classification_sr(
        row, card, source, tmp_path / "sr", model_version="7", first_stage=first
    )
    _dciodvfy_clean(written)


def _dciodvfy_clean(path: str | Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)
