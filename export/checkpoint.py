"""radserve checkpoints: a PyTorch ``state_dict`` plus the metadata needed to serve it.

Format (``torch.save`` of a dict, loaded with ``weights_only=True``)::

    {
      "format": "radserve-checkpoint/1",
      "architecture": "resnet18",            # a key of export.architectures.ARCHITECTURES
      "labels": ["shoulder", "elbow", ...],  # one per output, in output order
      "input_size": [224, 224],              # height, width the model was trained at
      "resize": "stretch" | "letterbox",
      "mean": [r, g, b], "std": [r, g, b],   # normalization of 0..1 RGB inputs
      "temperature": 1.0,                    # optional: temperature scaling of the logits
      "system": "spine-view",                # optional: the contract it was trained for
      "channels": 1,                         # optional: wire channels (6 for the MRI stack)
      "network_input_size": [132, 132],      # optional: network size behind the wire's (demos)
      "state_dict": {...},

The network's first convolution takes 3 channels (grey replicated to RGB) or ``channels`` when that
is more than 1; it is read from the weights.
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radserve.errors import ModelCardError
from radserve.export.architectures import build_model, first_conv_channels
from radserve.export.hashing import file_sha256
from radserve.model_card import ModelCard

CHECKPOINT_FORMAT = "radserve-checkpoint/1"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model ready to export and its model card (without parity figures yet)."""

    model: torch.nn.Module
    card: ModelCard
    network_channels: int = 3  # input channels of the network's first convolution


def save_checkpoint(path: Path, model: torch.nn.Module, card: ModelCard) -> None:
    """Write ``model``'s weights and the serving metadata of ``card``."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "architecture": card.architecture,
        "labels": list(card.labels),
        "input_size": list(card.input_size),
        "resize": card.resize,
        "mean": list(card.mean),
        "std": list(card.std),
        "temperature": card.temperature,
        "system": card.system,
        "channels": card.channels,
        "network_input_size": list(card.network_input_size) if card.network_input_size else None,
        "state_dict": model.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".partial")
    torch.save(payload, temporary)
    temporary.replace(path)


def load_checkpoint(path: Path, name: str) -> LoadedCheckpoint:
    """Load a radserve checkpoint; :class:`ModelCardError` names what is wrong with it."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelCardError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise ModelCardError(f"checkpoint {path} cannot be loaded: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelCardError(
            f"checkpoint {path} is not a {CHECKPOINT_FORMAT} file (see export/checkpoint.py)"
        )
    card = ModelCard.from_dict(
        {key: value for key, value in payload.items() if key not in ("format", "state_dict")}
        | {"name": name, "checkpoint_sha256": file_sha256(path)}
    )
    try:
        channels = first_conv_channels(payload["state_dict"])
        if "channels" not in payload:  # a checkpoint from elsewhere: the weights say it
            card = card.replace(channels=1 if channels == 3 else channels)
        model = build_model(card.architecture, card.num_classes, channels)
    except ValueError as error:
        raise ModelCardError(f"checkpoint {path}: {error}") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ModelCardError(
            f"checkpoint {path}: weights do not fit {card.architecture} with "
            f"{card.num_classes} labels: {first}"
        ) from None
    if channels != (3 if card.channels == 1 else card.channels):
        raise ModelCardError(
            f"checkpoint {path}: its card says {card.channels} wire channel(s) but the network's first "
            f"convolution takes {channels}"
        )
    return LoadedCheckpoint(model=model.eval(), card=card, network_channels=channels)
