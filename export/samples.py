"""Sample wire images for parity checks and calibration, preprocessed exactly as the client does."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from radserve.client.dicom import radiographs_from_dataset, read_radiographs
from radserve.client.inputs import discover
from radserve.client.preprocess import model_input
from radserve.errors import InputError
from radserve.model_card import ModelCard
from radserve.synthetic.dataset import REGIONS, synthetic_dataset

LOGGER = logging.getLogger(__name__)

SAMPLE_MATRIX = (512, 416)


def sample_images(
    card: ModelCard, count: int, folder: Path | None = None, seed: int = 0, skip: int = 0
) -> np.ndarray:
    """``uint8 [N, C, H, W]``: radiographs from ``folder`` after its first ``skip`` ones (in file
    order), or synthetic inputs of the card's system (every label), or synthetic radiographs of every
    region, drawn with ``seed``."""
    images: list[np.ndarray] = []
    if folder is None and card.system:
        from radserve.export.system_data import system_wire_images

        return system_wire_images(card.system, card, count, seed, SAMPLE_MATRIX)[0]
    if folder is not None:
        for path in discover([folder]).files:
            try:
                radiographs = read_radiographs(path)
            except InputError as error:
                LOGGER.warning("sample skipped: %s", error)
                continue
            images.extend(model_input(radiograph, card) for radiograph in radiographs)
            if len(images) >= skip + count:
                break
        images = images[skip:]
        if not images:
            raise ValueError(f"no readable radiograph in {folder} after the first {skip}")
    else:
        rng = np.random.default_rng(seed)
        for index in range(count):
            dataset = synthetic_dataset(REGIONS[index % len(REGIONS)], rng, matrix=SAMPLE_MATRIX)
            images.extend(
                model_input(r, card) for r in radiographs_from_dataset(dataset, f"synthetic-{index}")
            )
    return np.stack(images[:count])
