"""Synthetic data of every served system (:mod:`radserve.systems`), labelled with the system's labels.

- ``body-region``: the five regions' radiographs (:mod:`radserve.synthetic.dataset`);
- ``spine-view``: lumbar spine AP or lateral, native (normal or deformity) or post-operative
  (pedicle screws and rods, interbody cage, disc prosthesis);
- ``spondylolisthesis``: lateral lumbar views, normal, L5 spondylolysis (pars defect) or
  degenerative L4-L5 spondylolisthesis (slip);
- ``fracture``: hand, elbow, knee and shoulder radiographs, half of them with a displaced fracture (a gap)
  across a long bone and its bounding box (source pixels, x0 y0 x1 y1, inclusive);
- ``vertebral-fracture-mri``: MRI studies (:mod:`radserve.synthetic.mri`).

Deterministic per seed; :func:`write_system_set` writes the files and ``manifest.csv``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from radserve.synthetic._spine import spine_scene
from radserve.synthetic.dataset import _build, radiograph_dataset
from radserve.synthetic.mri import write_mri_set
from radserve.synthetic.phantoms import _BUILDERS, render_scene

Box = tuple[int, int, int, int]
_FRACTURE_REGIONS = ("hand", "elbow", "knee", "shoulder")


def _spine_view(label: str, rng: np.random.Generator, matrix: tuple[int, int]) -> tuple[np.ndarray, object]:
    view, _, kind = label.partition("_")
    status, _, category = kind.partition("_")
    scene = spine_scene(
        rng,
        "AP" if view == "ap" else "LATERAL",
        deformity=category == "deformity",
        hardware="" if status == "preop" else category,
    )
    return render_scene(scene, float(rng.uniform(0.9, 1.0)), rng, matrix)


def _spondylolisthesis(
    label: str, rng: np.random.Generator, matrix: tuple[int, int]
) -> tuple[np.ndarray, object]:
    scene = spine_scene(
        rng, "LATERAL", lysis=label == "spondylolysis", slip=label == "degenerative_spondylolisthesis"
    )
    return render_scene(scene, float(rng.uniform(0.9, 1.0)), rng, matrix)


def _fracture(
    label: str, rng: np.random.Generator, matrix: tuple[int, int]
) -> tuple[np.ndarray, object, Box | None]:
    """An extremity radiograph; a ``fracture`` cuts the longest bone in the field with a dark line."""
    while True:
        region = _FRACTURE_REGIONS[int(rng.integers(len(_FRACTURE_REGIONS)))]
        age = float(rng.uniform(0.0, 1.0))
        scene = _BUILDERS[region](rng, age)
        image, info = render_scene(scene, age, rng, matrix)
        if label != "fracture":
            return image, info, None
        box = _draw_fracture(image, info.to_pixels, scene.bones, rng)
        if box is not None:
            return image, info, box


def _bone_mask(bone, to_pixels: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    polys = [np.asarray(p) @ to_pixels[:, :2].T + to_pixels[:, 2] for p in bone.polys]
    mask = np.zeros(shape, np.uint8)
    for poly in polys:
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    return mask, np.concatenate(polys)


def _draw_fracture(
    image: np.ndarray, to_pixels: np.ndarray, bones: list, rng: np.random.Generator
) -> Box | None:
    """A displaced fracture across the longest bone in the field; its box is where gap and bone meet.

    The gap (3.5 % of the matrix wide, at most a third of the bone's width: a few pixels at a demo's
    network size) is filled with soft tissue: the bone there keeps 30 % of its brightness.
    """
    single = [bone for bone in bones if len(bone.polys) == 1] or bones  # not a set of ribs
    masks = [_bone_mask(bone, to_pixels, image.shape) for bone in single]
    mask, points = max(masks, key=lambda m: int(m[0].sum()))
    centre = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centre, full_matrices=False)
    along = float(np.abs((points - centre) @ axes[0]).max())
    width = float(mask.sum()) / (2 * along)  # the bone's mean width, pixels
    thickness = max(3, round(min(0.035 * min(image.shape), 0.35 * width)))
    for _ in range(8):
        at = centre + axes[0] * rng.uniform(-0.6, 0.6) * along
        angle = math.atan2(axes[1][1], axes[1][0]) + math.radians(rng.uniform(-25, 25))
        reach = np.array([math.cos(angle), math.sin(angle)]) * max(image.shape)
        line = np.zeros_like(mask)
        ends = (tuple(np.round(at - reach).astype(int)), tuple(np.round(at + reach).astype(int)))
        cv2.line(line, *ends, 1, thickness)
        crack = (line & mask).astype(bool)
        if crack.sum() >= thickness * thickness * 2:
            image[crack] *= 0.3
            ys, xs = np.nonzero(crack)
            return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    return None


_KVP = {"spine-view": 85, "spondylolisthesis": 90, "fracture": 60}
_BODY_PART = {"spine-view": "LSPINE", "spondylolisthesis": "LSPINE"}


def system_example(
    system: str, label: str, rng: np.random.Generator, matrix: tuple[int, int]
) -> tuple[Dataset, Box | None]:
    """One radiograph of ``system`` showing ``label``, as a CR/DX dataset, and its fracture box."""
    if system == "body-region":
        dataset, _, _ = _build(label, rng, matrix, ExplicitVRLittleEndian, None)
        return dataset, None
    box = None
    if system == "spine-view":
        image, info = _spine_view(label, rng, matrix)
    elif system == "spondylolisthesis":
        image, info = _spondylolisthesis(label, rng, matrix)
    elif system == "fracture":
        image, info, box = _fracture(label, rng, matrix)
    else:
        raise ValueError(f"no synthetic radiographs for system {system!r}")
    body_part = _BODY_PART.get(system, "EXTREMITY")
    dataset, _, _ = radiograph_dataset(
        image, info, body_part, _KVP[system], rng, False, ExplicitVRLittleEndian, None
    )
    return dataset, box


def write_system_set(
    system: str,
    out_dir: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    matrix: tuple[int, int] = (640, 528),
) -> Path:
    """Write ``count`` examples of ``system`` (labels balanced) and ``manifest.csv``; its path.

    Radiographs: columns path, label, sop_instance_uid, box (``x0 y0 x1 y1`` or empty). MRI: see
    :func:`radserve.synthetic.mri.write_mri_set`.
    """
    from radserve.systems import get_system

    labels = get_system(system).labels
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if system == "vertebral-fracture-mri":
        write_mri_set(out, count, seed=seed)
        return out / "manifest.csv"
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "sop_instance_uid", "box"])
        for index in range(count):
            label = labels[index % len(labels)]
            dataset, box = system_example(system, label, np.random.default_rng([seed, index]), matrix)
            path = out / f"{system}_{index:05d}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            writer.writerow([path, label, dataset.SOPInstanceUID, " ".join(map(str, box)) if box else ""])
    return out / "manifest.csv"
