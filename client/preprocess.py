"""From a display-ready radiograph to the exact tensor a model receives on the wire."""

from __future__ import annotations

import numpy as np

from client.dicom import Radiograph, resize
from client.model_card import ModelCard


def model_input(radiograph: Radiograph, card: ModelCard) -> np.ndarray:
    """``uint8 [1, H, W]`` at the model's input size, resized as its card says."""
    return resize(radiograph.pixels, card.input_size, card.resize)[np.newaxis]
