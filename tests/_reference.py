"""The in-process reference of the served path: the same model file run by ONNX Runtime here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from radserve.model_card import INPUT_NAME, OUTPUT_NAME


def onnx_reference(model_file: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of ``uint8 [N, 1, H, W]`` images, one image per run as a server instance runs them."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    runs = [session.run([OUTPUT_NAME], {INPUT_NAME: image[np.newaxis]})[0] for image in images]
    return np.concatenate(runs)
