"""The fracture detector: export with NMS inside and its gate, the served round trip to source-pixel
boxes in rows and the SR, and the boxes' mAP from pycocotools."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from test_boxes import _scoords

from radserve.client.box_mapping import wire_to_source
from radserve.client.classify import ClassifyOptions, classify
from radserve.client.dicom import read_radiographs
from radserve.client.preprocess import model_input
from radserve.client.results import ResultRow
from radserve.clinical.box_scores import box_map
from radserve.clinical.evaluate import evaluation_report
from radserve.clinical.labeled import classify_with_truth
from radserve.clinical.truth import read_truth
from radserve.errors import ExportError, ModelCardError
from radserve.export.architectures import build_model
from radserve.export.checkpoint import save_checkpoint
from radserve.export.detector import (
    DetectorExport,
    build_network,
    compare_detections,
    detector_card,
    export_detector,
    gate_detections,
    load_detector,
    onnx_detections,
    save_detector,
)
from radserve.export.model_config import parse_config
from radserve.export.pipeline import ExportRequest, export_checkpoint
from radserve.model_card import DETECTION_OUTPUTS, ModelCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS
from radserve.synthetic.system_images import write_system_set

K = 10


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SSDlite at 160 px with every weight perturbed: untrained, but its scores are not all tied."""
    from radserve.export.detector import build_network

    torch.manual_seed(3)
    network = build_network(1, 160, K)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    path = tmp_path_factory.mktemp("detector") / "fracture_detector.pt"
    save_detector(path, network, detector_card("fracture_detector", "fracture", K), 160)
    return path


@pytest.fixture(scope="module")
def fracture_repository(tmp_path_factory: pytest.TempPathFactory, detector_checkpoint: Path) -> Path:
    """An untrained fracture classifier and its detector, side by side."""
    folder = tmp_path_factory.mktemp("fracture-repository")
    card = ModelCard(
        name="fracture",
        architecture="mobilenet_v3_small",
        labels=("fracture", "no_fracture"),
        input_size=(384, 384),
        network_input_size=(96, 96),
        resize="letterbox",
        system="fracture",
    )
    torch.manual_seed(0)
    checkpoint = folder.parent / "fracture.pt"
    save_checkpoint(checkpoint, build_model("mobilenet_v3_small", 2), card)
    export_checkpoint(ExportRequest(checkpoint, "fracture", folder, samples=4, system="fracture"))
    return folder


@pytest.fixture(scope="module")
def detector_export(
    fracture_repository: Path, detector_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> DetectorExport:
    work = tmp_path_factory.mktemp("detector-work")
    return export_detector(detector_checkpoint, "fracture_detector", fracture_repository, work, samples=4)


@pytest.fixture(scope="module")
def fracture_server(fracture_repository: Path, detector_export: DetectorExport) -> Iterator[TritonServer]:
    with TritonServer(fracture_repository, ports=free_ports()) as server:
        yield server


def test_the_detector_is_published_with_nms_inside_and_gated(detector_export: DetectorExport) -> None:
    parity = detector_export.parity
    assert parity.compared > 0 and parity.matched == parity.compared
    assert parity.min_iou >= SETTINGS.export.detector_parity_min_iou
    card = ModelCard.read(detector_export.version_dir)
    assert (
        card.task == "detection" and card.max_detections == K and card.parity.detections["onnxruntime_fp32"]
    )
    config = parse_config((detector_export.version_dir.parent / "config.pbtxt").read_text())
    assert [output.name for output in config.output] == list(DETECTION_OUTPUTS)
    assert list(config.output[0].dims) == [K, 4]


def test_the_gate_refuses_moved_boxes_and_other_scores(detector_export: DetectorExport) -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 1, 384, 384), dtype=np.uint8)
    reference = onnx_detections(detector_export.version_dir / "model.onnx", images)
    assert compare_detections(reference, reference, "itself").matched > 0
    edge = np.array([[384.0, 10.0, 384.0, 30.0]] + [[0.0] * 4] * (K - 1), dtype=np.float32)  # no area
    clipped = [(edge, np.r_[0.5, np.zeros(K - 1)], np.zeros(K, np.int64))]
    assert compare_detections(clipped, clipped, "itself").matched == 2
    moved = [
        (boxes + np.array([3.0, 0.0, 3.0, 0.0]), scores, classes) for boxes, scores, classes in reference
    ]
    with pytest.raises(ExportError, match="no match with IoU"):
        gate_detections(compare_detections(reference, moved, "moved"), "moved")
    rescored = [(boxes, scores * 0.9, classes) for boxes, scores, classes in reference]
    with pytest.raises(ExportError, match="score differs"):
        gate_detections(compare_detections(reference, rescored, "rescored"), "rescored")


def test_a_detector_checkpoint_keeps_its_default_boxes(tmp_path: Path) -> None:
    card = detector_card("fracture_detector", "fracture", K)
    save_detector(tmp_path / "own.pt", build_network(1, 160, K, (0.1, 0.6)), card, 160)
    scales = load_detector(tmp_path / "own.pt", "d").network.anchor_generator.scales
    assert scales == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    payload = torch.load(tmp_path / "own.pt", weights_only=True)
    del payload["anchor_range"]  # written before the range was recorded: torchvision's SSDlite boxes
    torch.save(payload, tmp_path / "older.pt")
    scales = load_detector(tmp_path / "older.pt", "d").network.anchor_generator.scales
    assert scales == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


def test_a_system_without_boxes_has_no_detector() -> None:
    with pytest.raises(ModelCardError, match="no boxes output"):
        detector_card("body-region_detector", "body-region", K)


def _source_of(report: pydicom.Dataset) -> str:
    (evidence,) = report.CurrentRequestedProcedureEvidenceSequence
    return str(evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


def test_served_boxes_come_back_on_the_source_image(
    fracture_server: TritonServer, detector_export: DetectorExport, tmp_path: Path
) -> None:
    manifest = write_system_set("fracture", tmp_path / "inputs", 4, seed=5, matrix=(420, 300))
    files = sorted(manifest.parent.glob("*.dcm"))
    rows: list[ResultRow] = []
    options = ClassifyOptions(url=fracture_server.grpc_url, workers=1, sr_dir=tmp_path / "sr", gsps=True)
    summary = asyncio.run(classify(files, "fracture", rows.extend, options))
    assert summary.radiographs == len(files) == len(rows)
    card = detector_export.card
    onnx = detector_export.version_dir / "model.onnx"
    written = [pydicom.dcmread(path) for path in (tmp_path / "sr").rglob("*.dcm")]
    reports = {_source_of(report): report for report in written if report.Modality == "SR"}
    states = {
        str(state.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID): state
        for state in written
        if state.Modality == "PR"
    }
    with_boxes = 0
    for row in sorted(rows, key=lambda r: r.path):
        (radiograph,) = read_radiographs(Path(row.path))
        wire = model_input(radiograph, card)
        ((boxes, scores, _),) = onnx_detections(onnx, wire[np.newaxis])
        source = radiograph.values.shape
        expected = [
            wire_to_source(tuple(box), source, card.input_size, card.resize)
            for box, score in zip(boxes, scores, strict=True)
            if score >= SETTINGS.client.box_min_score
        ]
        got = [(b["x0"], b["y0"], b["x1"], b["y1"]) for b in row.boxes]
        assert len(got) == len(expected)
        assert np.allclose(sorted(got), sorted(expected), atol=0.02), row.path
        assert all(b["label"] == "fracture" for b in row.boxes)
        with_boxes += bool(row.boxes)
        assert len(_scoords(reports[row.sop_instance_uid].ContentSequence)) == len(row.boxes)
        if row.boxes:  # a presentation state draws them
            (annotation,) = states[row.sop_instance_uid].GraphicAnnotationSequence
            assert len(annotation.GraphicObjectSequence) == len(row.boxes)
    assert with_boxes > 0 and len(states) == with_boxes  # the test compares something


def test_evaluate_measures_the_served_boxes_with_pycocotools(
    fracture_server: TritonServer, tmp_path: Path
) -> None:
    manifest = write_system_set("fracture", tmp_path / "evaluate", 4, seed=6, matrix=(400, 330))
    truth = read_truth(manifest)
    options = ClassifyOptions(url=fracture_server.grpc_url, workers=1)
    labeled = classify_with_truth(tuple(sorted(manifest.parent.glob("*.dcm"))), "fracture", truth, options)
    boxes = evaluation_report(labeled)["boxes"]
    assert boxes["images"] == 4 and boxes["truth_boxes"] == 2
    assert boxes["detections"] == sum(len(row["boxes"]) for row in labeled.rows)
    assert 0.0 <= boxes["map_50_95"] <= boxes["map_50"] <= 1.0


def test_map_is_pycocotools_on_a_case_that_can_fail() -> None:
    truth = [[(10.0, 10.0, 50.0, 40.0)], [(100.0, 100.0, 140.0, 160.0)], []]

    def shifted(dx: float) -> list[list[dict[str, float]]]:
        return [
            [{"x0": x0 + dx, "y0": y0, "x1": x1 + dx, "y1": y1, "score": 0.9 - 0.1 * i}]
            for i, boxes in enumerate(truth)
            for x0, y0, x1, y1 in boxes
        ] + [[]]

    exact = box_map(truth, shifted(0.0), "fracture")
    assert exact["map_50"] == exact["map_50_95"] == 1.0
    near = box_map(truth, shifted(8.0), "fracture")  # IoU 32/48: found at 0.5, not at 0.7 and above
    assert near["map_50"] == 1.0 and 0.0 < near["map_50_95"] < 1.0
    far = box_map(truth, shifted(30.0), "fracture")  # IoU 10/70
    assert far["map_50"] == far["map_50_95"] == 0.0
    assert box_map(truth, [[], [], []], "fracture")["map_50"] == 0.0
