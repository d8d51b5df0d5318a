"""The fracture detector: SSDlite (torchvision, BSD-3) exported with NMS inside, gated, published.

The served graph takes the classifier's wire input (``uint8 [1, 1, H, W]``: one image per run, as
torchvision's detection transform handles a list of images one by one; the Python backend runs a
dynamic batch image by image), replicates grey to RGB and scales to 0..1 inside, runs SSDlite
(resize to its network size, heads, decoding, per-class NMS) and answers fixed-size padded outputs
(:data:`radserve.model_card.DETECTION_OUTPUTS`): boxes ``[1, K, 4]`` in wire pixel edges, scores
``[1, K]`` (0 for padding), classes ``[1, K]`` (label indices). It is exported with the TorchScript
exporter (``dynamo=False``), which keeps ``NonMaxSuppression`` inside the graph.

The gate compares ONNX Runtime's detections with PyTorch's on synthetic radiographs: every PyTorch
detection at or above a score floor has an ONNX Runtime detection of the same class with IoU at or
above ``detector_parity_min_iou`` and a score within ``detector_parity_max_score_diff``, and the
other way round (boxes matched by IoU, never by rank: tied scores may be ordered differently).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn

from radserve.errors import ExportError, ModelCardError
from radserve.export.hashing import file_sha256
from radserve.export.model_config import ServingOptions
from radserve.export.onnx_export import check_onnx
from radserve.export.repository import publish
from radserve.model_card import DETECTION_OUTPUTS, INPUT_NAME, DetectionParity, ModelCard, ParityRecord
from radserve.settings import SETTINGS
from radserve.systems import get_system

LOGGER = logging.getLogger(__name__)

DETECTOR_ARCHITECTURE = "ssdlite320_mobilenet_v3_large"
DETECTOR_FORMAT = "radserve-detector/1"
DETECTOR_OPSET = 17  # the TorchScript exporter's well-trodden opset with NonMaxSuppression
_SETTINGS = SETTINGS.export


# The default boxes' sizes, as fractions of the network's input, on SSDlite's six feature maps (from
# the finest to the coarsest, evenly spaced). torchvision's 0.2-0.95 suits COCO's objects; a fracture
# box on the synthetic radiographs is 4-28 % of the input (square root of its area at 256 px, smallest
# to largest of 40; median 11 %), mostly below 0.2, where only one default box per fracture matches.
ANCHOR_RANGE = (0.05, 0.5)
_TORCHVISION_ANCHOR_RANGE = (0.2, 0.95)  # checkpoints that do not record theirs


def build_network(
    num_labels: int, size: int, max_detections: int, anchor_range: tuple[float, float] = ANCHOR_RANGE
) -> nn.Module:
    """SSDlite-MobileNetV3-Large, random initialization, running at ``size`` x ``size``, its default
    boxes spanning ``anchor_range`` of the input."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    network = ssdlite320_mobilenet_v3_large(
        weights=None,
        weights_backbone=None,
        num_classes=num_labels + 1,  # + background
        detections_per_img=max_detections,
        score_thresh=0.01,
    )
    # the same aspect ratios as torchvision's, so the heads' shapes do not change
    network.anchor_generator = DefaultBoxGenerator(
        [[2, 3] for _ in range(6)], min_ratio=anchor_range[0], max_ratio=anchor_range[1]
    )
    half = [0.5, 0.5, 0.5]
    network.transform = GeneralizedRCNNTransform(
        size, size, half, half, size_divisible=1, fixed_size=(size, size)
    )
    return network


def detector_card(name: str, system: str, max_detections: int) -> ModelCard:
    """The card of a detector for ``system`` (its wire input, its positive label)."""
    contract = get_system(system)
    if "boxes" not in contract.outputs:
        raise ModelCardError(f"system {system!r} has no boxes output: it is served without a detector")
    return ModelCard(
        name=name,
        architecture=DETECTOR_ARCHITECTURE,
        labels=contract.labels[:1],
        input_size=contract.input_size,
        resize=contract.resize,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        channels=contract.channels,
        system=system,
        task="detection",
        max_detections=max_detections,
    )


def network_input(image: torch.Tensor) -> torch.Tensor:
    """SSDlite's input from one wire image ``uint8 [1, H, W]``: grey replicated to RGB, 0..1 (the
    served graph's and the training's)."""
    return image.to(torch.float32).expand(3, -1, -1) / 255.0


class DetectorGraph(nn.Module):
    """``uint8 [1, 1, H, W]`` → boxes ``[1, K, 4]``, scores ``[1, K]``, classes ``[1, K]`` (padded)."""

    def __init__(self, network: nn.Module, max_detections: int) -> None:
        super().__init__()
        self.network = network
        self.k = max_detections

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (found,) = self.network([network_input(image[0])])
        k = self.k
        boxes = torch.cat([found["boxes"], torch.zeros((k, 4))])[:k]
        scores = torch.cat([found["scores"], torch.zeros(k)])[:k]
        classes = torch.cat([found["labels"] - 1, torch.zeros(k, dtype=torch.int64)])[:k]
        return boxes.unsqueeze(0), scores.unsqueeze(0), classes.unsqueeze(0)


@dataclass(frozen=True)
class LoadedDetector:
    network: nn.Module
    card: ModelCard
    size: int  # the network's input size


def save_detector(path: Path, network: nn.Module, card: ModelCard, size: int) -> None:
    """Write the detector's weights and what serving it needs."""
    payload = {
        "format": DETECTOR_FORMAT,
        "architecture": card.architecture,
        "system": card.system,
        "size": size,
        "max_detections": card.max_detections,
        "anchor_range": _anchor_range(network),
        "state_dict": network.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)


def _anchor_range(network: nn.Module) -> list[float]:
    """The finest and coarsest maps' box sizes (``scales`` closes with an extra 1.0)."""
    scales = network.anchor_generator.scales
    return [float(scales[0]), float(scales[-2])]


def is_detector_checkpoint(path: Path) -> bool:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not ours to judge here: the classifier loader names the problem
        return False
    return isinstance(payload, dict) and payload.get("format") == DETECTOR_FORMAT


def load_detector(path: Path, name: str) -> LoadedDetector:
    """Load a detector checkpoint; :class:`ModelCardError` names what is wrong with it."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise ModelCardError(f"detector checkpoint {path} cannot be loaded: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != DETECTOR_FORMAT:
        raise ModelCardError(f"{path} is not a {DETECTOR_FORMAT} checkpoint")
    if payload["architecture"] != DETECTOR_ARCHITECTURE:
        raise ModelCardError(f"{path}: detector architecture {payload['architecture']!r} is not served")
    card = detector_card(name, payload["system"], int(payload["max_detections"]))
    card = card.replace(checkpoint_sha256=file_sha256(path))
    anchors = tuple(payload.get("anchor_range", _TORCHVISION_ANCHOR_RANGE))
    network = build_network(card.num_classes, int(payload["size"]), card.max_detections, anchors)
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ModelCardError(f"{path}: weights do not fit {DETECTOR_ARCHITECTURE}: {first}") from None
    return LoadedDetector(network.eval(), card, int(payload["size"]))


def export_detector_onnx(graph: DetectorGraph, card: ModelCard, path: Path) -> None:
    """The TorchScript exporter (NMS stays inside the graph), checked like every export."""
    example = torch.zeros((1, card.channels, *card.input_size), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(DETECTION_OUTPUTS),
            dynamo=False,
            opset_version=DETECTOR_OPSET,
        )
    model = onnx.load(str(path))
    check_onnx(model, DETECTION_OUTPUTS)
    ops = {node.op_type for node in model.graph.node} | {
        node.op_type
        for node in model.graph.node
        for attribute in node.attribute
        if attribute.g is not None
        for node in attribute.g.node
    }
    if "NonMaxSuppression" not in ops:
        raise ExportError(f"{card.name}: the exported graph has no NonMaxSuppression; not published")


Detections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per image: boxes, scores, classes


def torch_detections(graph: DetectorGraph, images: np.ndarray) -> Detections:
    with torch.inference_mode():
        answers = [graph(torch.from_numpy(image[np.newaxis])) for image in images]
    return [tuple(tensor[0].numpy() for tensor in answer) for answer in answers]  # type: ignore[misc]


def onnx_detections(path: Path, images: np.ndarray) -> Detections:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    answers = [session.run(list(DETECTION_OUTPUTS), {INPUT_NAME: image[np.newaxis]}) for image in images]
    return [tuple(tensor[0] for tensor in answer) for answer in answers]  # type: ignore[misc]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    same = np.abs(boxes - box).max(axis=1) <= 1e-2  # also boxes of no area (clipped at an edge)
    return np.where(same, 1.0, inter / np.maximum(area - inter, 1e-9))


def compare_detections(
    reference: Detections,
    candidate: Detections,
    reference_name: str,
    min_score: float = _SETTINGS.detector_parity_min_score,
    min_iou: float = _SETTINGS.detector_parity_min_iou,
    tolerance: float = _SETTINGS.detector_parity_max_score_diff,
) -> DetectionParity:
    """Match each side's detections above ``min_score`` to the other side's by IoU (same class).

    Where an image's K slots are all taken, detections scoring within ``tolerance`` of the lowest kept
    score are not compared: which of several equal scores makes the cut is arbitrary.
    """
    compared = matched = 0
    worst_iou, worst_score = 1.0, 0.0
    floors = [
        max(min_score, float(min(a[1][-1], b[1][-1])) + tolerance)
        if min(a[1][-1], b[1][-1]) > 0
        else min_score
        for a, b in zip(reference, candidate, strict=True)
    ]
    for ours, theirs in ((reference, candidate), (candidate, reference)):
        for (boxes, scores, classes), (other_boxes, other_scores, other_classes), floor in zip(
            ours, theirs, floors, strict=True
        ):
            for box, score, label in zip(boxes, scores, classes, strict=True):
                if score < floor:
                    continue
                compared += 1
                same = other_classes == label
                overlaps = np.where(same, _iou(box, other_boxes), 0.0)
                best = int(np.argmax(overlaps)) if len(overlaps) else -1
                iou = float(overlaps[best]) if best >= 0 else 0.0
                worst_iou = min(worst_iou, iou)
                if iou >= min_iou:
                    matched += 1
                    worst_score = max(worst_score, abs(float(score) - float(other_scores[best])))
    return DetectionParity(
        reference_name, len(reference), compared, matched, worst_iou, worst_score, min_score
    )


def gate_detections(
    report: DetectionParity, what: str, max_score_diff: float = _SETTINGS.detector_parity_max_score_diff
) -> None:
    """Refuse publication unless every compared detection matched within the score tolerance."""
    if report.compared == 0:
        raise ExportError(
            f"{what}: no detection at or above score {report.min_score} on {report.samples} samples: "
            "nothing to compare; not published"
        )
    if report.matched < report.compared:
        raise ExportError(
            f"{what}: {report.compared - report.matched} of {report.compared} detections have no match "
            f"with IoU >= {_SETTINGS.detector_parity_min_iou} in {report.reference} (worst IoU "
            f"{report.min_iou:.4f}); not published"
        )
    if report.max_score_diff > max_score_diff:
        raise ExportError(
            f"{what}: a matched detection's score differs from {report.reference} by "
            f"{report.max_score_diff:.3g}, above the allowed {max_score_diff:.3g}; not published"
        )


@dataclass(frozen=True)
class DetectorExport:
    card: ModelCard
    parity: DetectionParity
    version_dir: Path


def export_detector(
    checkpoint: Path,
    name: str,
    repository: Path,
    work: Path,
    *,
    samples: int = _SETTINGS.parity_samples,
    options: ServingOptions | None = None,
    keep_versions: int | None = None,
) -> DetectorExport:
    """Export, gate and publish a detector checkpoint as model ``name`` (embedded target)."""
    from radserve.export.pipeline import tool_versions
    from radserve.export.system_data import system_wire_images

    loaded = load_detector(checkpoint, name)
    card = loaded.card
    contract = get_system(card.system)
    images = system_wire_images(card.system, card.replace(labels=contract.labels), samples, seed=0)[0]
    graph = DetectorGraph(loaded.network, card.max_detections).eval()
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.onnx"
    export_detector_onnx(graph, card, path)
    report = compare_detections(
        torch_detections(graph, images), onnx_detections(path, images), "pytorch fp32"
    )
    LOGGER.info("detector parity %s", report)
    gate_detections(report, f"{name} (onnxruntime fp32)")
    card = card.replace(
        tool_versions=tool_versions(), parity=ParityRecord(detections={"onnxruntime_fp32": report})
    )
    folder = publish(repository, card, path, "embedded", options, keep_versions=keep_versions)
    return DetectorExport(card, report, folder)
