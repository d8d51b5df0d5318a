"""From a display-ready radiograph to the exact tensor a model receives on the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from radserve.client.dicom import Radiograph, read_radiographs
from radserve.model_card import ModelCard
from radserve.routing import RouterCard


def model_input(radiograph: Radiograph, card: ModelCard) -> np.ndarray[Any, Any]:
    """``uint8 [1, H, W]`` at the model's input size, resized as its card says."""
    return radiograph.resized(card.input_size, card.resize)[np.newaxis]


def wire_input(
    radiograph: Radiograph, card: ModelCard | RouterCard
) -> np.ndarray[Any, Any] | dict[str, np.ndarray[Any, Any]]:
    """What ``card``'s model receives: :func:`model_input`, or for a router one tensor per wire
    contract of its stages (by router input name), each exactly as that stage's own card says."""
    if isinstance(card, RouterCard):
        return {name: model_input(radiograph, stage) for name, stage in card.wires.items()}
    return model_input(radiograph, card)


def write_model_inputs(path: Path, card: ModelCard, output: Path) -> list[Path]:
    """Write the tensor(s) ``path`` becomes on the wire: PNG for a person, NPY for a program.

    A multi-frame file gives one output per frame, named ``<stem>_frame<N><suffix>``.
    """
    suffix = output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise ValueError(f"{output}: output must end in .png or .npy")
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for radiograph in read_radiographs(path):
        target = (
            output
            if radiograph.frame is None
            else output.with_name(f"{output.stem}_frame{radiograph.frame}{suffix}")
        )
        tensor = model_input(radiograph, card)
        if suffix == ".npy":
            np.save(target, tensor)
        elif not cv2.imwrite(str(target), tensor[0]):
            raise OSError(f"cannot write {target}")
        written.append(target)
    return written
