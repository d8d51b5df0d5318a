"""Requests for load tests and benchmarks: radiographs preprocessed once by the client's pipeline."""

from __future__ import annotations

import logging

import numpy as np

from radserve.errors import InputError
from radserve.model_card import ModelCard

LOGGER = logging.getLogger(__name__)


def wire_images(card: ModelCard, folder: str, limit: int = 64) -> list[np.ndarray]:
    """``uint8 [1, 1, H, W]`` requests from ``folder`` (or synthetic radiographs when empty).

    Files outside the model's input contract are left out by the same check ``classify`` applies.
    """
    from radserve.client.contract import read_accepted
    from radserve.client.dicom import radiographs_from_dataset
    from radserve.client.inputs import discover
    from radserve.client.preprocess import model_input
    from radserve.synthetic.dataset import REGIONS, synthetic_dataset

    images: list[np.ndarray] = []
    if folder:
        for path in discover([folder]).files:
            try:
                images.extend(model_input(r, card) for r in read_accepted(path, card.accepts))
            except InputError as error:
                LOGGER.warning("left out: %s", error)
            if len(images) >= limit:
                break
    if not images:
        rng = np.random.default_rng(0)
        for index in range(8):
            dataset = synthetic_dataset(REGIONS[index % len(REGIONS)], rng, matrix=(512, 416))
            images.extend(
                model_input(r, card) for r in radiographs_from_dataset(dataset, f"synthetic-{index}")
            )
    return [np.ascontiguousarray(image[np.newaxis]) for image in images[:limit]]
