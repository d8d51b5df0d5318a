"""Train the demo fracture detector (SSDlite) on synthetic radiographs, on the CPU.

The images are the wire images the client sends (display pipeline and letterbox of
:mod:`radserve.export.system_data`), half of them with a fracture and its box mapped onto the wire
image, half without (no box: every anchor is background). The network runs at ``size`` (SSDlite's
320 px, 256 for the demo) inside :class:`radserve.export.detector.DetectorGraph`'s preprocessing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radserve.export.architectures import start_residual_blocks_as_identity
from radserve.export.detector import (
    DETECTOR_ARCHITECTURE,
    build_network,
    detector_card,
    network_input,
    save_detector,
)
from radserve.export.train import TrainingPlan, augment, recalibrate_batch_norm, run_epochs
from radserve.settings import SETTINGS
from radserve.systems import get_system

LOGGER = logging.getLogger(__name__)


# The demo: SSDlite at 256 px (320 is SSDlite's own size), about 10 minutes on 2 CPU cores.
DEMO_PLAN = TrainingPlan(
    architecture=DETECTOR_ARCHITECTURE, input_size=256, train_images=960, epochs=10, batch_size=16
)


@dataclass(frozen=True)
class DetectorReport:
    """What :func:`train_detector` did (also written beside the checkpoint as ``.report.json``)."""

    system: str
    plan: dict[str, Any]  # the TrainingPlan (input_size: the network's)
    train_boxes: int  # training radiographs with a fracture box
    final_train_loss: float
    seconds: float


def _inputs(images: torch.Tensor) -> list[torch.Tensor]:
    """The network's inputs as the served graph makes them."""
    return [network_input(image) for image in images]


def _flipped(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], width: int) -> tuple:
    """Left-right mirror images (and their boxes)."""
    mirrored = []
    for target in targets:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        mirrored.append({"boxes": boxes, "labels": target["labels"]})
    return images.flip(-1), mirrored


def _features(network: nn.Module, images: torch.Tensor) -> None:
    """Backbone and heads of SSD on a batch (what batch-norm recalibration runs)."""
    batch, _ = network.transform(_inputs(images))
    network.head(list(network.backbone(batch.tensors).values()))


def train_detector(
    system: str,
    plan: TrainingPlan,
    checkpoint: Path,
    max_detections: int = SETTINGS.export.detector_max_detections,
) -> DetectorReport:
    """Train ``system``'s detector per ``plan`` (``input_size``: the network's) on its synthetic
    radiographs and save it."""
    from radserve.export.system_data import system_wire_examples

    started = time.monotonic()
    card = detector_card(system, system, max_detections)
    workers = min(8, os.cpu_count() or 1)
    wire, _, boxes = system_wire_examples(
        card.replace(labels=get_system(system).labels),
        plan.train_images,
        plan.seed,
        matrix=plan.matrix,
        workers=workers,
    )
    LOGGER.info("rendered %d radiographs in %.0f s", len(wire), time.monotonic() - started)
    targets = [
        {
            "boxes": torch.tensor([box] if box else [], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.ones(1 if box else 0, dtype=torch.int64),
        }
        for box in boxes
    ]
    torch.manual_seed(plan.seed)
    network = build_network(card.num_classes, plan.input_size, max_detections)
    start_residual_blocks_as_identity(network.backbone)
    images = torch.from_numpy(wire)

    def step(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, batch_targets = augment(images[index], generator), [targets[i] for i in index]
        if torch.rand(1, generator=generator).item() < 0.5:
            batch, batch_targets = _flipped(batch, batch_targets, images.shape[-1])
        losses = network(_inputs(batch), batch_targets)
        return losses["bbox_regression"] + losses["classification"]

    network.train()
    loss = run_epochs(plan, network, len(images), step, started)
    recalibrate_batch_norm(network, images, lambda batch: _features(network, batch))
    network.eval()
    save_detector(checkpoint, network, card, plan.input_size)
    report = DetectorReport(
        system=system,
        plan=asdict(plan),
        train_boxes=sum(box is not None for box in boxes),
        final_train_loss=float(loss.item()),
        seconds=round(time.monotonic() - started, 1),
    )
    checkpoint.with_suffix(".report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
