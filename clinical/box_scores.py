"""Box metrics of a served detector: COCO mAP computed by pycocotools, never by hand.

Each evaluated radiograph is one COCO image; its true boxes (truth file ``box`` column) and the
row's detections (source pixel edges, score) are converted to COCO ``[x, y, width, height]``. The
figures are COCOeval's: mAP@0.5 (``stats[1]``) and mAP@0.5:0.95 (``stats[0]``), 101-point
interpolated, all areas, up to 100 detections per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

from radserve.errors import ClinicalError

Boxes = Sequence[Sequence[float]]  # x0 y0 x1 y1 pixel edges


def _coco_box(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(value) for value in box[:4])
    return [x0, y0, x1 - x0, y1 - y0]


def box_map(
    truth: Sequence[Boxes], detections: Sequence[Sequence[dict[str, Any]]], label: str
) -> dict[str, Any]:
    """mAP of ``detections`` (per image: dicts with x0 y0 x1 y1 score) against ``truth`` (per image)."""
    from pycocotools.cocoeval import COCOeval

    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} images of truth, {len(detections)} of detections")
    annotations = [
        {"id": n, "image_id": image, "category_id": 1, "bbox": _coco_box(box), "iscrowd": 0}
        for n, (image, box) in enumerate(((i, b) for i, boxes in enumerate(truth) for b in boxes), start=1)
    ]
    for annotation in annotations:
        annotation["area"] = annotation["bbox"][2] * annotation["bbox"][3]
    found = [
        {
            "image_id": image,
            "category_id": 1,
            "bbox": _coco_box([d["x0"], d["y0"], d["x1"], d["y1"]]),
            "score": float(d["score"]),
        }
        for image, boxes in enumerate(detections)
        for d in boxes
    ]
    figures: dict[str, Any] = {
        "label": label,
        "images": len(truth),
        "truth_boxes": len(annotations),
        "detections": len(found),
        "map_50": None,
        "map_50_95": None,
        "library": "pycocotools COCOeval (bbox)",
    }
    if not annotations:
        return figures  # mAP is undefined without a true box
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground = _coco(len(truth), annotations, label)
        # loadRes refuses an empty list: no detection at all is an empty result set
        results = ground.loadRes(found) if found else _coco(len(truth), [], label)
        evaluation = COCOeval(ground, results, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return figures | {"map_50": float(evaluation.stats[1]), "map_50_95": float(evaluation.stats[0])}


def _coco(images: int, annotations: list[dict[str, Any]], label: str) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": [{"id": image} for image in range(images)],
        "annotations": annotations,
        "categories": [{"id": 1, "name": label}],
    }
    coco.createIndex()
    return coco


def labeled_box_map(rows: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """:func:`box_map` over the evaluated rows of an evaluation (``truth_boxes`` joined from the truth)."""
    evaluated = [row for row in rows if not row["excluded"]]
    missing = [row["path"] for row in evaluated if row.get("truth_boxes") is None]
    if missing:
        raise ClinicalError(f"the truth file has no box entry for {len(missing)} rows, e.g. {missing[0]}")
    return box_map([row["truth_boxes"] for row in evaluated], [row["boxes"] for row in evaluated], label)
