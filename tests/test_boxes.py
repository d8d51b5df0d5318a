"""Boxes through letterbox and stretch: a box drawn on a synthetic radiograph comes back exactly."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage

from radserve.client.box_mapping import source_to_wire, wire_to_source
from radserve.client.dicom import radiographs_from_dataset, resize
from radserve.client.gsps import write_boxes_gsps
from radserve.client.results import ResultRow, ResultWriter
from radserve.client.sr import read_source_header, write_classification_sr
from radserve.model_card import ModelCard
from radserve.synthetic.system_images import system_example

SIZE = (384, 384)


def _edges(profile: np.ndarray) -> tuple[float, float]:
    """Sub-pixel extent of a box from its coverage profile along one axis."""
    inside = np.nonzero(profile > 1e-3)[0]
    full = profile.max()
    start = inside[0] + 1.0 - profile[inside[0]] / full
    return start, start + profile.sum() / full


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("matrix", [(700, 530), (530, 700)])
def test_a_drawn_box_comes_back_within_two_source_pixels(mode: str, matrix: tuple[int, int]) -> None:
    dataset, _ = system_example("fracture", "no_fracture", np.random.default_rng(4), matrix)
    (radiograph,) = radiographs_from_dataset(dataset, "box-test")
    rows, cols = radiograph.pixels.shape
    box = (cols * 0.31, rows * 0.42, cols * 0.31 + 97, rows * 0.42 + 61)
    x0, y0, x1, y1 = (round(v) for v in box)
    marked, cleared = radiograph.pixels.copy(), radiograph.pixels.copy()
    marked[y0:y1, x0:x1], cleared[y0:y1, x0:x1] = 255, 0
    # resizing is linear: the difference of the two wire images is the box's coverage alone
    coverage = (resize(marked, SIZE, mode).astype(np.float64) - resize(cleared, SIZE, mode)) / 255.0
    wx0, wx1 = _edges(coverage.sum(axis=0))
    wy0, wy1 = _edges(coverage.sum(axis=1))
    back = wire_to_source((wx0, wy0, wx1, wy1), (rows, cols), SIZE, mode)
    assert np.max(np.abs(np.subtract(back, (x0, y0, x1, y1)))) <= 0.5, (back, (x0, y0, x1, y1))  # needed: 2
    wire = source_to_wire((x0, y0, x1, y1), (rows, cols), SIZE, mode)
    assert np.allclose(wire_to_source(wire, (rows, cols), SIZE, mode), (x0, y0, x1, y1))


def test_boxes_are_clipped_to_the_source_image() -> None:
    back = wire_to_source((-5.0, 0.0, 400.0, 10.0), (600, 300), SIZE, "letterbox")
    assert back[0] == 0.0 and back[2] == 300.0


def test_synthetic_fracture_box_marks_the_dark_line() -> None:
    rng = np.random.default_rng(11)
    dataset, box = system_example("fracture", "fracture", rng, (640, 528))
    assert box is not None
    x0, y0, x1, y1 = box
    assert 0 <= x0 < x1 < dataset.Columns and 0 <= y0 < y1 < dataset.Rows
    again, same = system_example("fracture", "fracture", np.random.default_rng(11), (640, 528))
    assert same == box and again.SOPInstanceUID == dataset.SOPInstanceUID
    _, none = system_example("fracture", "no_fracture", np.random.default_rng(11), (640, 528))
    assert none is None


def _scoords(items: object) -> list[object]:
    found = []
    for item in items or []:
        if item.ValueType == "SCOORD":
            found.append(item)
        found.extend(_scoords(item.get("ContentSequence")))
    return found


def test_sr_carries_each_box_as_scoord_on_the_source(tmp_path: Path) -> None:
    dataset, box = system_example("fracture", "fracture", np.random.default_rng(11), (640, 528))
    source_path = tmp_path / "fracture.dcm"
    dataset.save_as(source_path, enforce_file_format=True)
    x0, y0, x1, y1 = (float(v) for v in box)
    row = ResultRow(
        path=str(source_path),
        status="ok",
        sop_instance_uid=str(dataset.SOPInstanceUID),
        model="fracture",
        label="fracture",
        score=0.9,
        probabilities={"fracture": 0.9, "no_fracture": 0.1},
        boxes=[{"x0": x0, "y0": y0, "x1": x1 + 1, "y1": y1 + 1, "score": 0.8, "label": "fracture"}],
    )
    card = ModelCard(
        name="fracture",
        architecture="mobilenet_v3_small",
        labels=("fracture", "no_fracture"),
        input_size=(384, 384),
    )
    written = write_classification_sr(
        row, card, read_source_header(source_path), tmp_path / "sr", model_version="1"
    )
    (region,) = _scoords(pydicom.dcmread(written).ContentSequence)
    assert region.GraphicType == "POLYLINE"
    corners = np.asarray(region.GraphicData, dtype=np.float64).reshape(-1, 2)
    assert np.allclose(corners[[0, 2]], [[x0, y0], [x1 + 1, y1 + 1]])
    (image,) = [item for item in region.ContentSequence if item.ValueType == "IMAGE"]
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(written)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_gsps_draws_each_box_with_its_label_on_the_source(tmp_path: Path) -> None:
    """A GSPS (what viewers display) references the source and carries the box as a closed PIXEL
    polyline with a text object naming its label and score."""
    dataset, box = system_example("fracture", "fracture", np.random.default_rng(12), (640, 528))
    x0, y0, x1, y1 = (float(v) for v in box)
    boxes = [{"x0": x0, "y0": y0, "x1": x1 + 1, "y1": y1 + 1, "score": 0.8, "label": "fracture"}]
    row = ResultRow(
        path="fracture.dcm",
        status="ok",
        sop_instance_uid=str(dataset.SOPInstanceUID),
        label="fracture",
        score=0.9,
        probabilities={"fracture": 0.9, "no_fracture": 0.1},
        boxes=boxes,
    )
    card = ModelCard(
        name="fracture", architecture="resnet18", labels=("fracture", "no_fracture"), input_size=(64, 64)
    )
    written = write_boxes_gsps(row, card, dataset, tmp_path / "pr", model_version="1")
    state = pydicom.dcmread(written)
    assert state.SOPClassUID == GrayscaleSoftcopyPresentationStateStorage and state.Modality == "PR"
    assert state.StudyInstanceUID == dataset.StudyInstanceUID != state.SeriesInstanceUID
    (series,) = state.ReferencedSeriesSequence
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == dataset.SOPInstanceUID
    (annotation,) = state.GraphicAnnotationSequence
    (graphic,) = annotation.GraphicObjectSequence
    assert (graphic.GraphicType, graphic.GraphicAnnotationUnits) == ("POLYLINE", "PIXEL")
    corners = np.asarray(graphic.GraphicData, dtype=np.float64).reshape(-1, 2)
    assert np.allclose(corners[[0, 2, 4]], [[x0, y0], [x1 + 1, y1 + 1], [x0, y0]])  # closed
    (text,) = annotation.TextObjectSequence
    assert text.UnformattedTextValue == "fracture 0.80"
    with pytest.raises(ValueError, match="boxes"):
        write_boxes_gsps(replace(row, boxes=[]), card, dataset, tmp_path / "pr")
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(written)], capture_output=True, text=True, check=False)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, "\n".join(errors)


def test_boxes_are_a_json_column_in_csv(tmp_path: Path) -> None:
    row = ResultRow(
        path="a.dcm",
        status="ok",
        boxes=[{"x0": 1.5, "y0": 2.0, "x1": 9.0, "y1": 7.25, "score": 0.5, "label": "fracture"}],
    )
    with ResultWriter(tmp_path / "rows.csv") as writer:
        writer.write([row])
    (read,) = csv.DictReader((tmp_path / "rows.csv").open())
    assert json.loads(read["boxes"]) == row.boxes
