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


# The builders' regularizers (dropout before the head, stochastic depth), by architecture family.
_REGULARIZERS: dict[str, tuple[str, ...]] = {
    "efficientnet": ("dropout", "stochastic_depth_prob"),
    "mobilenet": ("dropout",),
}


def build_model(
    architecture: str, num_classes: int, in_channels: int = 3, *, regularized: bool = True
) -> torch.nn.Module:
    """An untrained torchvision ``architecture`` with a ``num_classes`` head, in eval mode.

    ``in_channels`` other than 3 replaces the first convolution by one taking that many channels
    (the MRI system's slice stack). ``regularized=False`` turns dropout and stochastic depth off (the
    demos' short runs from scratch stay at chance with them); the weights are the same either way.
    """
    import torchvision

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {sorted(ARCHITECTURES)}")
    family = architecture.partition("_")[0]
    off = {} if regularized else dict.fromkeys(_REGULARIZERS.get(family, ()), 0.0)
    model = torchvision.models.get_model(architecture, weights=None, num_classes=num_classes, **off)
    if in_channels != 3:
        name, first = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        replacement = torch.nn.Conv2d(
            in_channels,
            first.out_channels,
            first.kernel_size,
            first.stride,
            first.padding,
            first.dilation,
            first.groups,
            first.bias is not None,
        )
        setattr(parent, name.rpartition(".")[2], replacement)
    return model.eval()


def first_conv_channels(state_dict: dict[str, torch.Tensor]) -> int:
    """Input channels of a network's first convolution, from its weights (first 4-D tensor)."""
    for tensor in state_dict.values():
        if tensor.ndim == 4:
            return int(tensor.shape[1])
    raise ValueError("the weights hold no convolution")


def start_residual_blocks_as_identity(model: torch.nn.Module) -> int:
    """Zero the scale of the last batch norm in every residual branch of ``model``; how many.

    Each residual block then starts as the identity, so a deep network trained from scratch first
    behaves like the shallow one its stage transitions form (Goyal et al. 2017, "zero gamma"). Without it
    the demos' EfficientNets and MobileNets stayed at chance for hundreds of steps on the CPU. The
    architecture and the weights' shapes are unchanged: export and serving see an ordinary network.
    Covers torchvision's ResNet blocks and the MBConv / FusedMBConv / InvertedResidual blocks that
    have a residual connection (``use_res_connect``).
    """
    import torchvision.models.resnet as resnet

    blocks = 0
    for module in model.modules():
        if isinstance(module, resnet.BasicBlock):
            last = module.bn2
        elif isinstance(module, resnet.Bottleneck):
            last = module.bn3
        elif getattr(module, "use_res_connect", False) and hasattr(module, "block"):
            last = [m for m in module.block.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
        else:
            continue
        torch.nn.init.zeros_(last.weight)
        blocks += 1
    return blocks
