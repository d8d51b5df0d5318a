"""Grad-CAM served by Triton: a companion graph ``NAME_gradcam`` published beside the classifier.

The companion takes the same wire input as the classifier and answers ``probabilities`` and
``gradcam`` ``[B, C, h, w]``: for every class ``c`` the Grad-CAM map at the last convolutional
block, ``relu(sum_k alpha_ck A_k)`` with ``alpha_ck`` the spatial mean of d(logit_c)/dA_k.

All supported architectures end in global average pooling and a head of linear layers and
element-wise activations, so d(logit_c)/dA_kij = J_ck / (h w) with J the Jacobian of the head at the
pooled features: the graph computes J exactly by propagating the identity backwards through the head
(the activations' derivatives evaluated at this radiograph: MobileNetV3's Hardswish head is not
linear), which ONNX Runtime or TensorRT then run like any other graph. The export gate compares the
maps with PyTorch autograd Grad-CAM (:func:`autograd_gradcam`) on the parity samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from radserve.errors import ExportError
from radserve.export.model_config import ServingOptions
from radserve.export.onnx_export import export_onnx
from radserve.export.parity import compare, gate
from radserve.export.repository import publish
from radserve.export.serving_graph import ServingGraph
from radserve.export.targets import ServingTarget
from radserve.model_card import (
    GRADCAM_OUTPUT,
    GRADCAM_SUFFIX,
    INPUT_NAME,
    OUTPUT_NAME,
    GradCamAgreement,
    ModelCard,
    ParityRecord,
)
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)
GRADCAM_OUTPUTS = (OUTPUT_NAME, GRADCAM_OUTPUT)
_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten)
_ACTIVATIONS = (nn.ReLU, nn.Hardswish, nn.SiLU)


def gradcam_name(name: str) -> str:
    """The companion model of classifier ``name``."""
    return f"{name}{GRADCAM_SUFFIX}"


def split_network(network: nn.Module, architecture: str) -> tuple[nn.Module, list[nn.Module]]:
    """(the layers up to the last convolutional block, the head after global average pooling)."""
    if architecture.startswith("resnet"):
        blocks = [network.conv1, network.bn1, network.relu, network.maxpool]
        blocks += [network.layer1, network.layer2, network.layer3, network.layer4]
        return nn.Sequential(*blocks), [network.fc]
    if architecture.startswith(("efficientnet", "mobilenet")):
        return network.features, list(network.classifier)
    raise ExportError(f"Grad-CAM is not available for architecture {architecture!r}")


def _derivative(layer: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """d layer(x) / dx at ``value`` (element-wise activations only), as PyTorch's autograd defines it."""
    if isinstance(layer, nn.ReLU):
        return (value > 0).to(value.dtype)
    if isinstance(layer, nn.Hardswish):
        return torch.where(value < -3, 0.0, torch.where(value <= 3, value / 3 + 0.5, 1.0))
    sigmoid = torch.sigmoid(value)
    return sigmoid * (1 + value * (1 - sigmoid))  # SiLU


class GradCamGraph(ServingGraph):
    """``uint8 [B, 1, H, W]`` → (softmax ``[B, C]``, Grad-CAM of every class ``[B, C, h, w]``)."""

    def __init__(self, network: nn.Module, card: ModelCard) -> None:
        super().__init__(network, card)
        self.features, head = split_network(network, card.architecture)
        unsupported = [
            type(layer).__name__
            for layer in head
            if not isinstance(layer, (nn.Linear, *_ACTIVATIONS, *_PASS_THROUGH))
        ]
        if unsupported:
            raise ExportError(
                f"Grad-CAM: the head of {card.architecture} has unsupported layers {unsupported}"
            )
        self.head = nn.ModuleList(head)
        self.register_buffer("identity", torch.eye(card.num_classes))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        activations = self.features(self.normalized(image))
        value = activations.mean(dim=(2, 3))
        inputs = []
        for layer in self.head:
            inputs.append(value)
            value = layer(value)
        jacobian = self.identity.unsqueeze(0)  # d logits / d logits; broadcast over the batch
        for layer, layer_input in zip(reversed(self.head), reversed(inputs), strict=True):
            if isinstance(layer, nn.Linear):
                jacobian = jacobian @ layer.weight
            elif isinstance(layer, _ACTIVATIONS):
                jacobian = jacobian * _derivative(layer, layer_input).unsqueeze(1)
        height, width = activations.shape[2], activations.shape[3]
        weighted = (jacobian @ activations.flatten(2)).unflatten(2, (height, width))
        cams = torch.relu(weighted) / (height * width)
        return torch.softmax(value * self.inverse_temperature, dim=1), cams


def autograd_gradcam(
    network: nn.Module, card: ModelCard, images: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Reference Grad-CAM with PyTorch autograd: maps ``[N, h, w]`` of ``classes`` (one per image)."""
    graph = ServingGraph(network, card).eval()
    features, _ = split_network(network, card.architecture)  # hooked on its last block
    captured: list[torch.Tensor] = []
    hook = features[-1].register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    maps = []
    try:
        for image, target in zip(images, classes, strict=True):
            captured.clear()
            logits = network(graph.normalized(torch.from_numpy(image[np.newaxis])))
            (gradient,) = torch.autograd.grad(logits[0, int(target)], captured[0])
            weights = gradient.mean(dim=(2, 3), keepdim=True)
            maps.append(torch.relu((weights * captured[0]).sum(dim=1))[0].detach().numpy())
    finally:
        hook.remove()
    return np.stack(maps)


def map_correlations(reference: np.ndarray, candidate: np.ndarray) -> list[float]:
    """Pearson correlation of each pair of maps (1.0 where both are constant and equal)."""
    values = []
    for expected, actual in zip(reference, candidate, strict=True):
        expected, actual = expected.ravel(), actual.ravel()
        if expected.std() == 0 or actual.std() == 0:
            values.append(1.0 if np.allclose(expected, actual, atol=1e-6) else 0.0)
        else:
            values.append(float(np.corrcoef(expected, actual)[0, 1]))
    return values


def onnx_gradcam(path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, maps ``[N, C, h, w]``) of a companion graph under ONNX Runtime."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    answers = [session.run(list(GRADCAM_OUTPUTS), {INPUT_NAME: image[np.newaxis]}) for image in images]
    return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])


@dataclass(frozen=True)
class GradCamCompanion:
    """A gated companion graph, ready to publish."""

    card: ModelCard
    onnx_path: Path
    map_shape: tuple[int, int, int]  # [C, h, w] per radiograph

    def publish(
        self,
        repository: Path,
        target: ServingTarget | str = "embedded",
        options: ServingOptions | None = None,
        keep_versions: int | None = None,
    ) -> Path:
        """Add the companion as the next version of ``NAME_gradcam``; returns its version folder."""
        return publish(
            repository,
            self.card,
            self.onnx_path,
            target,
            options,
            keep_versions=keep_versions,
            extra_outputs=[(GRADCAM_OUTPUT, list(self.map_shape))],
        )


def build_gradcam(
    network: nn.Module, card: ModelCard, images: np.ndarray, reference: np.ndarray, work: Path
) -> GradCamCompanion:
    """Export and gate the companion of ``card``'s model (:class:`ExportError` when refused).

    Gates: the probabilities as the classifier's fp32 gate; every map of the predicted class
    correlates with autograd Grad-CAM at ``SETTINGS.export.gradcam_min_correlation`` or better.
    """
    companion = card.replace(name=gradcam_name(card.name), precision="fp32")
    path = work / f"{companion.name}.onnx"
    export_onnx(network, card, path, graph=GradCamGraph(network, card), outputs=GRADCAM_OUTPUTS)
    probabilities, maps = onnx_gradcam(path, images)
    report = compare(reference, probabilities, "pytorch fp32")
    gate(report, SETTINGS.export.fp32_min_top1, SETTINGS.export.fp32_max_abs_diff, f"{companion.name}")
    predicted = reference.argmax(axis=1)
    correlations = map_correlations(
        autograd_gradcam(network, card, images, predicted), maps[np.arange(len(images)), predicted]
    )
    minimum = SETTINGS.export.gradcam_min_correlation
    if min(correlations) < minimum:
        raise ExportError(
            f"{companion.name}: Grad-CAM correlation with PyTorch autograd is {min(correlations):.4f} "
            f"on some sample, below the required {minimum}; not published"
        )
    figures = GradCamAgreement(len(images), min(correlations), float(np.mean(correlations)))
    LOGGER.info("Grad-CAM vs autograd %s", figures)
    parity = ParityRecord({"onnxruntime_fp32": report}, gradcam=figures)
    return GradCamCompanion(companion.replace(parity=parity), path, tuple(maps.shape[1:]))
