"""Train the demo fracture detector (SSDlite) on synthetic radiographs, on the CPU.

The images are the wire images the client sends (display pipeline and letterbox of
:mod:`radserve.export.system_data`), half of them with a fracture and its box mapped onto the wire
image, half without (no box: every anchor is background). The network runs at ``size`` (SSDlite's
320 by default) inside :class:`radserve.export.detector.DetectorGraph`'s preprocessing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from radserve.export.detector import build_network, detector_card, save_detector
from radserve.export.train import _augment
from radserve.settings import SETTINGS
from radserve.systems import get_system

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorPlan:
    """How the demo detector is trained; the defaults take a few minutes on 2 CPU cores."""

    system: str = "fracture"
    size: int = 320
    train_images: int = 600
    epochs: int = 8
    batch_size: int = 16
    learning_rate: float = 2e-3
    matrix: tuple[int, int] = (640, 528)
    seed: int = 0
    max_detections: int = SETTINGS.export.detector_max_detections


@dataclass(frozen=True)
class DetectorReport:
    architecture: str
    system: str
    size: int
    train_images: int
    train_boxes: int
    epochs: int
    final_train_loss: float
    seconds: float


def _inputs(images: torch.Tensor) -> list[torch.Tensor]:
    """The network's inputs as the served graph makes them: grey replicated to RGB, 0..1."""
    return [image.to(torch.float32).expand(3, -1, -1) / 255.0 for image in images]


def _flipped(images: torch.Tensor, targets: list[dict[str, torch.Tensor]], width: int) -> tuple:
    """Left-right mirror images (and their boxes)."""
    mirrored = []
    for target in targets:
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
        mirrored.append({"boxes": boxes, "labels": target["labels"]})
    return images.flip(-1), mirrored


def _recalibrate_batch_norm(network: nn.Module, images: torch.Tensor) -> None:
    """Batch-norm statistics as the exact average over the training images (cf. export/train.py)."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    network.train()
    with torch.no_grad():
        for start in range(0, len(images), 32):
            batch, _ = network.transform(_inputs(images[start : start + 32]))
            network.head(list(network.backbone(batch.tensors).values()))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    network.eval()


def train_detector(plan: DetectorPlan, checkpoint: Path) -> DetectorReport:
    """Train the detector per ``plan`` on synthetic radiographs of its system and save it."""
    from radserve.export.system_data import system_wire_examples

    started = time.monotonic()
    card = detector_card(plan.system, plan.system, plan.max_detections)
    contract = get_system(plan.system)
    workers = min(8, os.cpu_count() or 1)
    wire, _, boxes = system_wire_examples(
        plan.system, card.replace(labels=contract.labels), plan.train_images, plan.seed, plan.matrix, workers
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
    network = build_network(card.num_classes, plan.size, plan.max_detections)
    optimizer = torch.optim.AdamW(network.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    steps = plan.epochs * -(-len(wire) // plan.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=plan.learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(plan.seed)
    images = torch.from_numpy(wire)
    loss = torch.tensor(0.0)
    for epoch in range(plan.epochs):
        network.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), plan.batch_size):
            index = order[start : start + plan.batch_size]
            batch, batch_targets = _augment(images[index], generator), [targets[i] for i in index]
            if torch.rand(1, generator=generator).item() < 0.5:
                batch, batch_targets = _flipped(batch, batch_targets, images.shape[-1])
            losses = network(_inputs(batch), batch_targets)
            loss = losses["bbox_regression"] + losses["classification"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        LOGGER.info(
            "epoch %d/%d loss %.4f (%.0f s)", epoch + 1, plan.epochs, loss.item(), time.monotonic() - started
        )
    _recalibrate_batch_norm(network, images)
    save_detector(checkpoint, network, card, plan.size)
    report = DetectorReport(
        architecture=card.architecture,
        system=plan.system,
        size=plan.size,
        train_images=len(wire),
        train_boxes=sum(box is not None for box in boxes),
        epochs=plan.epochs,
        final_train_loss=float(loss.item()),
        seconds=round(time.monotonic() - started, 1),
    )
    checkpoint.with_suffix(".report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
