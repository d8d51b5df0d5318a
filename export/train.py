"""Train the demo checkpoint: a torchvision classifier on synthetic radiographs, on the CPU.

The training images go through the client's own display pipeline and resize, so the model learns
exactly the inputs it will be served.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radserve.client.dicom import radiographs_from_dataset
from radserve.client.preprocess import model_input
from radserve.export.architectures import build_model, start_residual_blocks_as_identity
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
    # 16, not 32: twice the optimizer steps (152) for the same images seen, i.e. the same CPU time
    batch_size: int = 16
    learning_rate: float = 2e-3
    matrix: tuple[int, int] = (640, 528)
    seed: int = 0
    # start each residual block as the identity (start_residual_blocks_as_identity): the systems'
    # deep demos need it; the ResNet-18 demo learns faster without it
    identity_start: bool = False


# Each served system's demo: what differs from TrainingPlan's defaults besides the system's architecture
# and demo_input_size (radserve.systems), batches of 32 and identity-start residual blocks
# (start_residual_blocks_as_identity). Chosen by measurement on 2 CPU cores (docs/how-to/systems.md).
_DEMO_PLANS: dict[str, dict[str, Any]] = {  # TrainingPlan fields per system
    "spine-view": {"train_images": 1200, "epochs": 8, "batch_size": 16},  # 10 classes, 120 images each
    "spondylolisthesis": {"train_images": 960, "epochs": 8, "batch_size": 16},
    "fracture": {"train_images": 2400, "epochs": 8, "batch_size": 16},
    "body-region": {"train_images": 400, "epochs": 5},
    "vertebral-fracture-mri": {"train_images": 200, "epochs": 8, "batch_size": 8},  # studies
}


def demo_plan(system: str) -> TrainingPlan:
    """The plan ``radserve train --system NAME`` starts from."""
    from radserve.systems import get_system

    contract = get_system(system)
    return TrainingPlan(
        architecture=contract.architecture,
        input_size=contract.demo_input_size[0],
        **({"batch_size": 32, "identity_start": True} | _DEMO_PLANS.get(system, {})),
    )


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
    held_out_macro_auroc: float | None = None  # scikit-learn, one-vs-rest for more than two classes
    system: str = ""


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


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random brightness/contrast jitter on uint8 wire images (the renderer already varies pose)."""
    gain = 0.8 + 0.4 * torch.rand((len(batch), 1, 1, 1), generator=generator)
    shift = 20.0 * (torch.rand((len(batch), 1, 1, 1), generator=generator) - 0.5)
    return (batch.float() * gain + shift).clamp(0, 255).to(torch.uint8)


def train(plan: TrainingPlan, checkpoint: Path) -> TrainingReport:
    """Train the body-region demo per ``plan``, evaluate on held-out synthetic images, save a checkpoint."""
    started = time.monotonic()
    card = ModelCard(
        name="demo",
        architecture=plan.architecture,
        labels=REGIONS,
        input_size=(plan.input_size, plan.input_size),
        resize="letterbox",
    )
    train_set = synthetic_wire_images(plan.train_images, card, plan.matrix, plan.seed)
    held_out = synthetic_wire_images(plan.held_out_images, card, plan.matrix, plan.seed + 1_000_003)
    return fit(card, plan, train_set, held_out, checkpoint, started)


def train_system(system: str, plan: TrainingPlan, checkpoint: Path) -> TrainingReport:
    """Train a served system's demo on its synthetic data (:mod:`radserve.export.system_data`).

    The card is the system's contract (labels, channels, the study's input size on the wire); the
    network runs at ``plan.input_size`` behind the graph's average pooling, which must divide the
    study's size (the systems' ``demo_input_size`` does).
    """
    from radserve.export.system_data import system_wire_images
    from radserve.systems import get_system

    started = time.monotonic()
    contract = get_system(system)
    card = ModelCard(
        name=system,
        architecture=plan.architecture,
        labels=contract.labels,
        input_size=contract.input_size,
        network_input_size=(plan.input_size, plan.input_size),
        resize=contract.resize,
        channels=contract.channels,
        system=system,
    )
    workers = min(8, os.cpu_count() or 1)
    train_set = system_wire_images(system, card, plan.train_images, plan.seed, plan.matrix, workers)
    held_out = system_wire_images(
        system, card, plan.held_out_images, plan.seed + 1_000_003, plan.matrix, workers
    )
    return fit(card, plan, train_set, held_out, checkpoint, started)


def recalibrate_batch_norm(
    module: torch.nn.Module, images: torch.Tensor, forward: Callable[[torch.Tensor], object]
) -> None:
    """Batch-norm statistics of ``module`` as the exact average over the training images (one pass of
    ``forward`` over batches of ``images``, no gradient).

    A short run leaves the running estimates behind the weights, above all with the small momentum
    of MobileNetV3 and EfficientNet (0.01): the eval-mode network then answers one class.
    """
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for start in range(0, len(images), 32):
            forward(images[start : start + 32])
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum


def run_epochs(
    plan: TrainingPlan,
    network: torch.nn.Module,
    count: int,
    step: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    started: float,
) -> torch.Tensor:
    """``plan.epochs`` passes of AdamW with a one-cycle schedule over ``count`` examples in random
    batches: ``step(indices, generator)`` returns a batch's loss. The last batch's loss.

    Seeded by ``plan.seed`` and run with torch's deterministic kernels (a warning names an operator
    that has none, e.g. some CUDA kernels), so one plan gives the same weights on one machine.
    """
    optimizer = torch.optim.AdamW(network.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    steps = plan.epochs * -(-count // plan.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=plan.learning_rate, total_steps=steps)
    generator = torch.Generator().manual_seed(plan.seed)
    loss = torch.tensor(0.0)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for epoch in range(plan.epochs):
            order = torch.randperm(count, generator=generator)
            for start in range(0, count, plan.batch_size):
                loss = step(order[start : start + plan.batch_size], generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            LOGGER.info(
                "epoch %d/%d loss %.4f (%.0f s)",
                epoch + 1,
                plan.epochs,
                loss.item(),
                time.monotonic() - started,
            )
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    return loss


def fit(
    card: ModelCard,
    plan: TrainingPlan,
    train_set: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
    checkpoint: Path,
    started: float,
) -> TrainingReport:
    """Train ``card``'s network inside its serving graph on wire images; evaluate; save; report."""
    from sklearn.metrics import roc_auc_score

    torch.manual_seed(plan.seed)
    LOGGER.info(
        "rendered %d + %d inputs in %.0f s", len(train_set[0]), len(held_out[0]), time.monotonic() - started
    )
    in_channels = 3 if card.channels == 1 else card.channels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    network = build_model(card.architecture, card.num_classes, in_channels, regularized=False)
    if plan.identity_start:
        start_residual_blocks_as_identity(network)  # from scratch, deep nets otherwise stay at chance
    graph = ServingGraph(network, card).to(device)
    images, targets = torch.from_numpy(train_set[0]), torch.from_numpy(train_set[1])

    def step(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # cross-entropy on the logits, never the log of the served softmax: clamped, a confidently
        # wrong answer (p < 1e-8, common from scratch) gives no gradient at all
        logits = network(graph.normalized(augment(images[index], generator).to(device)))
        return torch.nn.functional.cross_entropy(logits, targets[index].to(device))

    network.train()
    loss = run_epochs(plan, network, len(images), step, started)

    recalibrate_batch_norm(graph, images, lambda batch: graph(batch.to(device)))
    network.eval()
    test_x, test_y = held_out
    with torch.inference_mode():
        probabilities = torch.cat(
            [graph(torch.from_numpy(test_x[i : i + 32]).to(device)).cpu() for i in range(0, len(test_x), 32)]
        )
    scores = probabilities.numpy()
    accuracy = float((scores.argmax(1) == test_y).mean())
    auroc = None
    if len(set(test_y.tolist())) == card.num_classes:
        binary = card.num_classes == 2
        auroc = float(
            roc_auc_score(test_y, scores[:, 1] if binary else scores, multi_class="ovr", average="macro")
        )
    save_checkpoint(checkpoint, network.cpu(), card)
    report = TrainingReport(
        architecture=card.architecture,
        labels=card.labels,
        train_images=len(train_set[0]),
        held_out_images=len(test_y),
        epochs=plan.epochs,
        held_out_accuracy=accuracy,
        final_train_loss=float(loss.item()),
        seconds=round(time.monotonic() - started, 1),
        held_out_macro_auroc=auroc,
        system=card.system,
    )
    checkpoint.with_suffix(".report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
