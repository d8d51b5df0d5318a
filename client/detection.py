"""Boxes from the detector served next to a classifier: one request per radiograph, mapped to the source.

A classifier ``NAME`` whose system lists ``boxes`` among its outputs (:mod:`radserve.systems`) has its
detector published as ``NAME_detector`` (:data:`radserve.model_card.DETECTOR_SUFFIX`). When that model
is in the server's repository, each classified radiograph is also sent to it and its row carries the
detections at or above ``SETTINGS.client.box_min_score``, mapped from wire pixels to the source image
through the exact inverse of the letterbox or stretch the client applied (:mod:`radserve.client.box_mapping`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from radserve.client.box_mapping import Box, wire_to_source
from radserve.client.grpc_client import AsyncRadiographClient
from radserve.errors import ModelCardError, ServerError
from radserve.model_card import DETECTION_OUTPUTS, ModelCard, detector_name
from radserve.settings import SETTINGS
from radserve.systems import SYSTEMS


@dataclass(frozen=True)
class Detector:
    """A served detector and how its wire boxes map back: the classifier's resize and input size."""

    client: AsyncRadiographClient
    name: str
    card: ModelCard
    min_score: float = SETTINGS.client.box_min_score

    async def boxes(self, image: np.ndarray[Any, Any], source: tuple[int, int]) -> list[dict[str, Any]]:
        """Detections on wire image ``uint8 [1, H, W]`` as boxes on the ``source`` (rows, cols) image."""
        prediction = await self.client.infer(
            self.name, image[np.newaxis], extra_outputs=DETECTION_OUTPUTS, primary=False
        )
        boxes, scores, classes = (prediction.extra[name][0] for name in DETECTION_OUTPUTS)
        card = self.card
        found = []
        for box, score, label in zip(boxes, scores, classes, strict=True):
            if score < self.min_score:
                continue
            x0, y0, x1, y1 = map(float, box)
            edges = wire_to_source((x0, y0, x1, y1), source, card.input_size, card.resize)
            x0, y0, x1, y1 = (round(value, 2) for value in edges)
            if x1 <= x0 or y1 <= y0:  # on the letterbox's padding only: nothing of the source
                continue
            found.append(Box(x0, y0, x1, y1, round(float(score), 6), card.labels[int(label)]))
        return [box.to_dict() for box in sorted(found, key=lambda b: -b.score)]


async def find_detector(
    client: AsyncRadiographClient, model: str, card: ModelCard, timeout: float
) -> Detector | None:
    """The detector served next to classifier ``model``, or ``None`` when its system has no boxes or
    the server has no ``model_detector``; :class:`ModelCardError` when it does not fit the classifier."""
    system = SYSTEMS.get(card.system)
    if system is None or "boxes" not in system.outputs:
        return None
    name = detector_name(model)
    try:
        await client.wait_ready(name, timeout)
    except ServerError:
        return None
    detector = await client.model_card(name)
    if detector.task != "detection":
        raise ModelCardError(f"model {name!r} is served next to {model!r} but is not a detector")
    fits = (detector.input_size, detector.resize, detector.channels) == (
        card.input_size,
        card.resize,
        card.channels,
    )
    if not fits:
        raise ModelCardError(
            f"detector {name!r} takes {detector.channels}x{detector.input_size} {detector.resize} images; "
            f"its classifier {model!r} sends {card.channels}x{card.input_size} {card.resize}"
        )
    return Detector(client, name, detector)
