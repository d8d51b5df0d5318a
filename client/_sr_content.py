"""The content tree of radserve's Comprehensive SR (see :mod:`radserve.client.sr`): codes and items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues,
    ImageContentItem,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    RelationshipTypeValues,
    ScoordContentItem,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radserve.client.results import ResultRow
from radserve.model_card import ModelCard

CODING_SCHEME = "99RADSERVE"
"""Designator of radserve's private codes (declared in the Coding Scheme Identification Sequence)."""

MANUFACTURER = "radserve"

ROOT_TITLE = CodedConcept("RS0001", CODING_SCHEME, "Radiograph classification")
CLASS_PROBABILITY = CodedConcept("RS0002", CODING_SCHEME, "Class probability")
PROBABILITY = CodedConcept("RS0003", CODING_SCHEME, "Probability")
CLASS = CodedConcept("RS0004", CODING_SCHEME, "Class")
DECISION = CodedConcept("RS0005", CODING_SCHEME, "Decision")
THRESHOLD = CodedConcept("RS0006", CODING_SCHEME, "Threshold")
FINDING = CodedConcept("121071", "DCM", "Finding")
MEASUREMENT_GROUP = CodedConcept("125007", "DCM", "Measurement Group")
SOURCE_OF_MEASUREMENT = CodedConcept("121112", "DCM", "Source of Measurement")
RATIO = CodedConcept("{ratio}", "UCUM", "ratio")
IMAGE_REGION = CodedConcept("111030", "DCM", "Image Region")
_HAS_PROPERTIES = RelationshipTypeValues.HAS_PROPERTIES

LO_MAX = 64


def content_tree(
    row: ResultRow,
    card: ModelCard,
    header: Dataset,
    frame: int | None,
    model_version: str,
    first_stage: ModelCard | None,
) -> ContainerContentItem:
    extra: list[ContainerContentItem | NumContentItem | TextContentItem] = []
    if row.decision:
        decision = TextContentItem(DECISION, row.decision, relationship_type=RelationshipTypeValues.CONTAINS)
        if row.threshold is not None:
            decision.ContentSequence = ContentSequence(
                [NumContentItem(THRESHOLD, float(row.threshold), RATIO, relationship_type=_HAS_PROPERTIES)]
            )
        extra.append(decision)
    extra.extend(_box_items(row, header, frame))
    score = row.score if row.score is not None else row.probabilities[row.label]
    groups = [
        _measurement_group(card, model_version, row.label, score, row.probabilities, header, frame, extra)
    ]
    if first_stage is not None and row.first_stage_label:  # a router's row: the stage that chose the route
        first_score = row.first_stage_score
        if first_score is None:
            first_score = row.first_stage_probabilities[row.first_stage_label]
        probabilities = row.first_stage_probabilities
        groups.insert(
            0,
            _measurement_group(
                first_stage,
                row.first_stage_version,
                row.first_stage_label,
                first_score,
                probabilities,
                header,
                frame,
            ),
        )
    device = DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["radserve-device", card.name, model_version, card.checkpoint_sha256]),
        name=card.name[:LO_MAX],
        manufacturer_name=MANUFACTURER,
        model_name=card.name[:LO_MAX],
    )
    context = ObservationContext(
        observer_device_context=ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    root = ContainerContentItem(ROOT_TITLE, is_content_continuous=False)
    root.ContentSequence = ContentSequence([*context, *groups])
    return root


def _measurement_group(
    card: ModelCard,
    model_version: str,
    label: str,
    score: float,
    probabilities: dict[str, float],
    header: Dataset,
    frame: int | None,
    extra: Sequence[ContainerContentItem | NumContentItem | TextContentItem] = (),
) -> ContainerContentItem:
    """One model's answer: its identification, its finding (inferred from the source), each class's
    probability (the card's order), then ``extra`` (decision, boxes)."""
    image = ImageContentItem(
        name=SOURCE_OF_MEASUREMENT,
        referenced_sop_class_uid=header.SOPClassUID,
        referenced_sop_instance_uid=header.SOPInstanceUID,
        referenced_frame_numbers=frame,
        relationship_type=RelationshipTypeValues.INFERRED_FROM,
    )
    finding = TextContentItem(FINDING, label, relationship_type=RelationshipTypeValues.CONTAINS)
    finding.ContentSequence = ContentSequence(
        [NumContentItem(PROBABILITY, float(score), RATIO, relationship_type=_HAS_PROPERTIES), image]
    )
    version = ", ".join(part for part in (model_version, card.architecture, card.precision) if part)
    parameters = [f"architecture={card.architecture}", f"precision={card.precision}"]
    if card.checkpoint_sha256:
        parameters.append(f"checkpoint_sha256={card.checkpoint_sha256}")
    group = ContainerContentItem(
        MEASUREMENT_GROUP, is_content_continuous=False, relationship_type=RelationshipTypeValues.CONTAINS
    )
    items = ContentSequence([*AlgorithmIdentification(card.name, version, parameters), finding])
    labels = [name for name in card.labels if name in probabilities]
    for name in labels + [name for name in probabilities if name not in labels]:
        item = NumContentItem(
            CLASS_PROBABILITY,
            float(probabilities[name]),
            RATIO,
            relationship_type=RelationshipTypeValues.CONTAINS,
        )
        item.ContentSequence = ContentSequence(
            [TextContentItem(CLASS, name, relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD)]
        )
        items.append(item)
    items.extend(extra)
    group.ContentSequence = items
    return group


def _box_items(row: ResultRow, header: Dataset, frame: int | None) -> list[TextContentItem]:
    """One finding per detected box, inferred from a SCOORD rectangle on the source image."""
    items = []
    for box in row.boxes:
        x0, y0, x1, y1 = (float(box[key]) for key in ("x0", "y0", "x1", "y1"))
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
        region = ScoordContentItem(
            IMAGE_REGION,
            GraphicTypeValues.POLYLINE,
            corners,
            relationship_type=RelationshipTypeValues.INFERRED_FROM,
        )
        region.ContentSequence = ContentSequence(
            [
                ImageContentItem(
                    name=SOURCE_OF_MEASUREMENT,
                    referenced_sop_class_uid=header.SOPClassUID,
                    referenced_sop_instance_uid=header.SOPInstanceUID,
                    referenced_frame_numbers=frame,
                    relationship_type=RelationshipTypeValues.SELECTED_FROM,
                )
            ]
        )
        finding = TextContentItem(
            FINDING, str(box.get("label", "")) or "box", relationship_type=RelationshipTypeValues.CONTAINS
        )
        score = NumContentItem(
            PROBABILITY,
            float(box.get("score", 1.0)),
            RATIO,
            relationship_type=RelationshipTypeValues.HAS_PROPERTIES,
        )
        finding.ContentSequence = ContentSequence([score, region])
        items.append(finding)
    return items
