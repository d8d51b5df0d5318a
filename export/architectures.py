"""The torchvision architectures of the radiograph studies radserve serves."""

from __future__ import annotations

import torch

# Architecture name -> the study that published a classifier on it.
ARCHITECTURES: dict[str, str] = {
    "resnet18": "pediatric body region (5 classes); fracture",
    "resnet50": "vertebral fracture on MRI slices",
    "efficientnet_b0": "fracture",
    "efficientnet_b6": "spine view (10 classes)",
    "efficientnet_v2_m": "lumbar spondylolisthesis (3 classes, Grad-CAM)",
    "mobilenet_v3_small": "fracture",
}


def build_model(architecture: str, num_classes: int) -> torch.nn.Module:
    """An untrained torchvision ``architecture`` with a ``num_classes`` head, in eval mode."""
    import torchvision

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    model = torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
    return model.eval()
