"""Train the demo checkpoint: a torchvision classifier on synthetic radiographs, on the CPU.

The training images go through the client's own display pipeline and resize, so the model learns
exactly the inputs it will be served.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from radserve.client.dicom import radiographs_from_dataset
from radserve.client.preprocess import model_input
from radserve.export.architectures import build_model
from radserve.export.checkpoint import save_checkpoint
from radserve.export.serving_graph import ServingGraph
from radserve.model_card import ModelCard
from radserve.synthetic.dataset import REGIONS, synthetic_dataset

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPlan:
    """How the demo model is trained; the defaults take a few minutes on 2 CPU cores."""

    architecture: str = "resnet18"
    input_size: int = 224
    train_images: int = 600
    held_out_images: int = 150
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 2e-3
    matrix: tuple[int, int] = (640, 528)
    seed: int = 0


@dataclass(frozen=True)
class TrainingReport:
    architecture: str
    labels: tuple[str, ...]
    train_images: int
    held_out_images: int
    epochs: int
    held_out_accuracy: float
    final_train_loss: float
    seconds: float


def synthetic_wire_images(
    count: int, card: ModelCard, matrix: tuple[int, int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` synthetic radiographs as wire images ``uint8 [N, 1, H, W]`` and their label indices."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for index in range(count):
        label = index % len(REGIONS)
        dataset = synthetic_dataset(REGIONS[label], rng, matrix=matrix)
        (radiograph,) = radiographs_from_dataset(dataset, f"synthetic-{seed}-{index}")
        images.append(model_input(radiograph, card))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random brightness/contrast jitter on uint8 wire images (the renderer already varies pose)."""
    gain = 0.8 + 0.4 * torch.rand((len(batch), 1, 1, 1), generator=generator)
    shift = 20.0 * (torch.rand((len(batch), 1, 1, 1), generator=generator) - 0.5)
    return (batch.float() * gain + shift).clamp(0, 255).to(torch.uint8)


def train(plan: TrainingPlan, checkpoint: Path) -> TrainingReport:
    """Train per ``plan``, evaluate on held-out synthetic images, save a radserve checkpoint."""
    started = time.monotonic()
    torch.manual_seed(plan.seed)
    card = ModelCard(
        name="demo",
        architecture=plan.architecture,
        labels=REGIONS,
        input_size=(plan.input_size, plan.input_size),
        resize="letterbox",
    )
    train_x, train_y = synthetic_wire_images(plan.train_images, card, plan.matrix, plan.seed)
    test_x, test_y = synthetic_wire_images(plan.held_out_images, card, plan.matrix, plan.seed + 1_000_003)
    LOGGER.info("rendered %d + %d images in %.0f s", len(train_x), len(test_x), time.monotonic() - started)

    network = build_model(plan.architecture, len(REGIONS))
    graph = ServingGraph(network, card)
    optimizer = torch.optim.AdamW(network.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    steps = plan.epochs * -(-len(train_x) // plan.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=plan.learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(plan.seed)
    images, targets = torch.from_numpy(train_x), torch.from_numpy(train_y)
    loss = torch.tensor(0.0)
    for epoch in range(plan.epochs):
        network.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), plan.batch_size):
            index = order[start : start + plan.batch_size]
            probabilities = graph(_augment(images[index], generator))
            loss = torch.nn.functional.nll_loss(torch.log(probabilities.clamp_min(1e-8)), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        LOGGER.info(
            "epoch %d/%d loss %.4f (%.0f s)", epoch + 1, plan.epochs, loss.item(), time.monotonic() - started
        )

    network.eval()
    with torch.inference_mode():
        predictions = torch.cat(
            [graph(torch.from_numpy(test_x[i : i + 64])).argmax(1) for i in range(0, len(test_x), 64)]
        )
    accuracy = float((predictions.numpy() == test_y).mean())
    save_checkpoint(checkpoint, network, card)
    report = TrainingReport(
        architecture=plan.architecture,
        labels=REGIONS,
        train_images=plan.train_images,
        held_out_images=plan.held_out_images,
        epochs=plan.epochs,
        held_out_accuracy=accuracy,
        final_train_loss=float(loss.item()),
        seconds=round(time.monotonic() - started, 1),
    )
    checkpoint.with_suffix(".report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
