"""Wire tensors of a served system's synthetic data, made by the client's own preprocessing.

Training the demos and the parity samples of an MRI export both start here, so a demo learns
exactly the tensors the client sends: radiographs go through the display pipeline and resize
(:func:`radserve.client.preprocess.model_input`), MRI studies through the series pipeline
(:func:`radserve.client.mri_series.study_tensor`).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from radserve.client.box_mapping import source_to_wire
from radserve.client.dicom import radiographs_from_dataset
from radserve.client.mri_series import SliceFile, study_tensor
from radserve.client.preprocess import model_input
from radserve.model_card import ModelCard
from radserve.synthetic.mri import MRI_LABELS, mri_study
from radserve.synthetic.system_images import system_example

MRI_MATRIX = (160, 160)
WireBox = tuple[float, float, float, float]


def system_wire_images(
    system: str,
    card: ModelCard,
    count: int,
    seed: int,
    matrix: tuple[int, int] = (640, 528),
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` examples of ``system`` as ``uint8 [N, C, H, W]`` and their label indices (balanced).

    Example ``i`` uses ``np.random.default_rng([seed, i])`` whatever ``workers`` (processes) is.
    """
    images, labels, _ = system_wire_examples(
        card.replace(system=system), count, seed, matrix=matrix, workers=workers
    )
    return images, labels


def system_wire_examples(
    card: ModelCard, count: int, seed: int, *, matrix: tuple[int, int] = (640, 528), workers: int = 1
) -> tuple[np.ndarray, np.ndarray, list[WireBox | None]]:
    """:func:`system_wire_images` of ``card.system`` and each example's box on the wire image (pixel
    edges), if any."""
    system = card.system
    labels = np.arange(count, dtype=np.int64) % len(card.labels)
    jobs = [(system, card, seed, index, int(label), matrix) for index, label in enumerate(labels)]
    if workers > 1 and count >= 64:  # a pool of spawned processes pays off for larger sets only
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            examples = list(pool.map(_example, jobs, chunksize=8))
    else:
        examples = [_example(job) for job in jobs]
    return np.stack([image for image, _ in examples]), labels, [box for _, box in examples]


def _example(job: tuple[str, ModelCard, int, int, int, tuple[int, int]]) -> tuple[np.ndarray, WireBox | None]:
    system, card, seed, index, label, matrix = job
    rng = np.random.default_rng([seed, index])
    if card.channels > 1:
        study = mri_study(MRI_LABELS[label], rng, slices=9, matrix=MRI_MATRIX)
        slices = [SliceFile(f"synthetic-{seed}-{index}-{n}", ds) for n, ds in enumerate(study.datasets)]
        return study_tensor(study.study_instance_uid, slices, card), None
    dataset, box = system_example(system, card.labels[label], rng, matrix)
    (radiograph,) = radiographs_from_dataset(dataset, f"synthetic-{seed}-{index}")
    wire = None
    if box is not None:  # inclusive source pixels -> pixel edges -> the wire image
        x0, y0, x1, y1 = box
        edges = (float(x0), float(y0), float(x1 + 1), float(y1 + 1))
        wire = source_to_wire(edges, radiograph.values.shape, card.input_size, card.resize)
    return model_input(radiograph, card), wire
