"""The content tree of radserve's SR (see :mod:`radserve.client.sr`): a TID 1500 Measurement Report.

Built with highdicom's templates; each label is coded by :func:`radserve.systems.finding_code`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    SourceImageForRegion,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from radserve.client.results import ResultRow
from radserve.model_card import NEGATIVE_DECISION, ModelCard, detector_name
from radserve.systems import PRIVATE_SCHEME, finding_code

__all__ = [
    "CODING_SCHEME",
    "DECISION",
    "LO_MAX",
    "MANUFACTURER",
    "PROCEDURE",
    "THRESHOLD",
    "content_tree",
    "label_concept",
]

CODING_SCHEME = PRIVATE_SCHEME
"""Designator of radserve's private codes (declared in the Coding Scheme Identification Sequence)."""

MANUFACTURER = "radserve"
PROCEDURE = CodedConcept("168537006", "SCT", "Plain radiography")  # CID 10005 (PS3.16)
DECISION = CodedConcept("RS0005", CODING_SCHEME, "Decision")  # no standard concept: documented private
NEGATIVE = CodedConcept("260385009", "SCT", "Negative")  # CID 250 Positive/Negative
THRESHOLD = CodedConcept("122411", "DCM", "Threshold Value")
PROBABILITY = CodedConcept("122157", "DCM", "Probability")
RATIO = CodedConcept("{ratio}", "UCUM", "ratio")

LO_MAX = 64


def label_concept(label: str) -> CodedConcept:
    """The coded concept of a model's label (SNOMED CT where one is known, else private)."""
    scheme, value, meaning = finding_code(label)
    return CodedConcept(value, scheme, meaning)


def content_tree(
    row: ResultRow,
    card: ModelCard,
    header: Dataset,
    frame: int | None,
    model_version: str,
    first_stage: ModelCard | None,
) -> ContainerContentItem:
    """The root CONTAINER of the Measurement Report of one classified radiograph."""
    frames = [frame] if frame else None
    groups: list[MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations] = []
    if first_stage is not None and row.first_stage_label:  # a router's row: the stage that chose the route
        groups.append(
            _classification(
                first_stage,
                row.first_stage_version,
                row.first_stage_label,
                row.first_stage_probabilities,
                header,
                frames,
            )
        )
    groups.append(
        _classification(
            card, model_version, row.label, row.probabilities, header, frames, row.decision, row.threshold
        )
    )
    groups.extend(_boxes(row, card, model_version, header, frames))
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
    report = MeasurementReport(
        observation_context=context,
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
        referenced_images=_library_entries(header),
    )
    # the Measurement Report's root container (highdicom's Sequence items are typed as Dataset)
    return cast(ContainerContentItem, report[0])


def _library_entries(header: Dataset) -> list[Dataset] | None:
    """The source for the Image Library, when it can be described there: highdicom copies Patient
    Orientation into two TEXT items, which may not be empty (PS3.3 C.17.3). Without it the library is
    empty; the source stays referenced by each measurement group and by the evidence sequence."""
    orientation = header.get("PatientOrientation")
    values = list(orientation) if orientation is not None and not isinstance(orientation, str) else []
    return [header] if len(values) == 2 and all(str(value).strip() for value in values) else None


def _algorithm(card: ModelCard, model_version: str, name: str | None = None) -> AlgorithmIdentification:
    """TID 4019: the model's name, its version as served (model version, architecture, precision)."""
    version = ", ".join(part for part in (model_version, card.architecture, card.precision) if part)
    parameters = [f"architecture={card.architecture}", f"precision={card.precision}"]
    if card.checkpoint_sha256:
        parameters.append(f"checkpoint_sha256={card.checkpoint_sha256}")
    return AlgorithmIdentification((name or card.name)[:LO_MAX], version[:LO_MAX], parameters)


def _tracking(header: Dataset, frames: Sequence[int] | None, *parts: str) -> TrackingIdentifier:
    """A tracking identifier stable for the same source, frame and answer (a resent SR tracks the same)."""
    uid = generate_uid(
        entropy_srcs=["radserve-tracking", str(header.SOPInstanceUID), str(frames or ""), *parts]
    )
    return TrackingIdentifier(uid=uid, identifier=" ".join(parts)[:LO_MAX])


def _classification(
    card: ModelCard,
    model_version: str,
    label: str,
    probabilities: dict[str, float],
    header: Dataset,
    frames: Sequence[int] | None,
    decision: str = "",
    threshold: float | None = None,
) -> MeasurementsAndQualitativeEvaluations:
    """TID 1501: one model's answer. Finding type: the top label; one probability per class (the
    card's order), named by the class's code; the decision under the operating points as a
    qualitative evaluation and its threshold as a measurement."""
    ordered = [name for name in card.labels if name in probabilities]
    ordered += [name for name in probabilities if name not in ordered]
    measurements = [Measurement(label_concept(name), float(probabilities[name]), RATIO) for name in ordered]
    evaluations = []
    if decision:
        value = NEGATIVE if decision == NEGATIVE_DECISION else label_concept(decision)
        evaluations.append(QualitativeEvaluation(DECISION, value))
    if threshold is not None:
        measurements.append(Measurement(THRESHOLD, float(threshold), RATIO))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(header, frames, card.name, "classification"),
        finding_type=label_concept(label),
        algorithm_id=_algorithm(card, model_version),
        measurements=measurements,
        qualitative_evaluations=evaluations or None,
        source_images=[
            SourceImageForMeasurementGroup(str(header.SOPClassUID), str(header.SOPInstanceUID), frames)
        ],
    )


def _boxes(
    row: ResultRow, card: ModelCard, model_version: str, header: Dataset, frames: Sequence[int] | None
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 per detected box: a closed POLYLINE rectangle on the source image, its label as the
    finding type and its score as a probability, found by the classifier's detector."""
    groups = []
    for index, box in enumerate(row.boxes, start=1):
        x0, y0, x1, y1 = (float(box[key]) for key in ("x0", "y0", "x1", "y1"))
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)
        source = SourceImageForRegion(str(header.SOPClassUID), str(header.SOPInstanceUID), frames)
        label = str(box.get("label", "")) or "box"
        groups.append(
            PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(header, frames, card.name, f"box {index}"),
                referenced_region=ImageRegion(GraphicTypeValues.POLYLINE, corners, source),
                finding_type=label_concept(label),
                algorithm_id=_algorithm(card, model_version, detector_name(card.name)),
                measurements=[Measurement(PROBABILITY, float(box.get("score", 1.0)), RATIO)],
            )
        )
    return groups
