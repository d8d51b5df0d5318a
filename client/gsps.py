"""Grayscale Softcopy Presentation States of detected boxes: what viewers draw over a radiograph.

Many viewers do not draw an SR's SCOORD; they do display a GSPS. For a row with boxes, one GSPS
references the source radiograph (and frame) and carries each box as a closed POLYLINE graphic object
with its label and score as a text object, on one graphic layer. Coordinates are the source's
(column, row) with (0, 0) the top-left corner of the first pixel: GSPS ``PIXEL`` units (PS3.3
C.10.5.1.2) are the result rows' box coordinates (radserve.client.box_mapping). The GSPS joins the source's
study in a series of its own, like the SR (docs/reference/conformance.md, "Objects radserve creates").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from highdicom.pr import (
    AnnotationUnitsValues,
    GraphicAnnotation,
    GraphicLayer,
    GraphicObject,
    GraphicTypeValues,
    GrayscaleSoftcopyPresentationState,
    TextObject,
)
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from radserve.client._sr_content import LO_MAX, MANUFACTURER
from radserve.client.dicom import captured_warnings
from radserve.client.results import ResultRow
from radserve.client.sr import evidence_header, frame_number, radserve_version, save_private
from radserve.errors import InputError
from radserve.model_card import ModelCard

__all__ = ["GSPS_SERIES_NUMBER", "gsps_series_uid", "write_boxes_gsps"]

GSPS_SERIES_NUMBER = 9902
"""Series Number of the presentation states (the series UID tells models apart)."""
_LAYER = "RADSERVE_BOXES"


def gsps_series_uid(study_instance_uid: str, model: str, model_version: str = "") -> UID:
    """The deterministic Series Instance UID of the presentation states of one model in one study."""
    return generate_uid(entropy_srcs=["radserve-gsps-series", study_instance_uid, model, model_version])


def write_boxes_gsps(
    row: ResultRow, card: ModelCard, source: Dataset, output_dir: Path, *, model_version: str = ""
) -> Path:
    """Write the GSPS of the boxes of ``row`` over ``source``; return its path.

    Args:
        row: a successful result with at least one box.
        card: the classifier's model card (its name labels the presentation).
        source: the radiograph's data set (its header is enough).
        output_dir: the folder; the file is ``<SOP Instance UID>.dcm``, written atomically.
        model_version: the version that answered.

    Returns:
        The written file.

    Raises:
        ValueError: ``row`` is not an ``ok`` row with boxes.
        InputError: the source lacks what a presentation state needs (reason ``sr_failed``).
    """
    path = row.path or "<dataset>"
    if row.status != "ok" or not row.boxes:
        raise ValueError(f"{path}: a presentation state is written for an ok row with boxes only")
    header = evidence_header(source, path)
    frame = frame_number(row, header, path)
    layer = GraphicLayer(_LAYER, order=1, description=f"boxes of {card.name}"[:LO_MAX])
    graphics, texts = [], []
    for box in row.boxes:
        x0, y0, x1, y1 = (float(box[key]) for key in ("x0", "y0", "x1", "y1"))
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
        graphics.append(GraphicObject(GraphicTypeValues.POLYLINE, corners, AnnotationUnitsValues.PIXEL))
        label = f"{box.get('label', '') or 'box'} {float(box.get('score', 1.0)):.2f}"
        texts.append(
            TextObject(
                label[:LO_MAX], AnnotationUnitsValues.PIXEL, anchor_point=(x0, y0), anchor_point_visible=False
            )
        )
    uid = generate_uid()
    try:
        with captured_warnings(path):  # highdicom and pydicom quote the values they warn about
            annotation = GraphicAnnotation(
                [header], layer, referenced_frame_number=frame, graphic_objects=graphics, text_objects=texts
            )
            state = GrayscaleSoftcopyPresentationState(
                referenced_images=[header],
                series_instance_uid=gsps_series_uid(header.StudyInstanceUID, card.name, model_version),
                series_number=GSPS_SERIES_NUMBER,
                sop_instance_uid=uid,
                instance_number=frame or 1,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=card.name[:LO_MAX],
                # highdicom annotates tuple[str]; Software Versions is multi-valued (one per component)
                software_versions=tuple(  # type: ignore[arg-type]
                    v for v in (model_version, f"radserve {radserve_version()}") if v
                ),
                device_serial_number="",
                content_label="RADSERVE_BOXES",
                content_description=f"boxes found by {card.name}"[:LO_MAX],
                graphic_annotations=[annotation],
                graphic_layers=[layer],
            )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        # the message may quote patient attributes: keep only the type (the cause stays chained)
        raise InputError(
            path, "sr_failed", f"cannot build the presentation state ({type(error).__name__})"
        ) from error
    # General Series Laterality is 2C (a paired body part): the source's, empty when it has none
    laterality = str(header.get("ImageLaterality") or header.get("Laterality") or "")
    state.Laterality = laterality if laterality in ("R", "L") else ""
    return save_private(state, output_dir / f"{uid}.dcm")
