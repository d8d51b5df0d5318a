"""The last step of the flow: a prediction, or the reason there is none, becomes a result row."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from radserve.client.grpc_client import Prediction
from radserve.client.results import ResultRow, Status
from radserve.model_card import ModelCard
from radserve.reasons import Reason
from radserve.routing import DOWNSTREAM_OUTPUT, FIRST_STAGE_OUTPUT, ROUTE_ERROR_OUTPUT, RouterCard


def prediction_row(
    path: str,
    sop_instance_uid: str,
    frame: int | None,
    model: str,
    card: ModelCard,
    probabilities: np.ndarray[Any, Any],
    prediction: Prediction,
) -> ResultRow:
    """The row of one classified radiograph: ``probabilities`` ``[C]`` from the request ``prediction``."""
    best = int(np.argmax(probabilities))
    by_label = {label: round(float(p), 6) for label, p in zip(card.labels, probabilities, strict=True)}
    decision, threshold = card.decide(by_label)
    ood_threshold = card.ood_threshold
    return ResultRow(
        path=path,
        status="ok",
        sop_instance_uid=sop_instance_uid,
        frame=frame,
        model=model,
        model_version=prediction.model_version,
        label=card.labels[best],
        score=round(float(probabilities[best]), 6),
        probabilities=by_label,
        latency_ms=round(prediction.latency_seconds * 1000, 3),
        ood=None if ood_threshold is None else bool(probabilities[best] < ood_threshold),
        decision=decision,
        threshold=threshold,
    )


def routed_row(
    path: str,
    sop_instance_uid: str,
    frame: int | None,
    model: str,
    router: RouterCard,
    probabilities: np.ndarray[Any, Any],
    prediction: Prediction,
) -> ResultRow:
    """The row of a radiograph answered by the router ``model``: the downstream model's prediction
    (or its failure, or the first stage's own when its label has no route) with the first stage's."""
    first = prediction_row(
        path,
        sop_instance_uid,
        frame,
        router.first.model,
        router.first.card,
        prediction.extra[FIRST_STAGE_OUTPUT],
        replace(prediction, model_version=router.first.version),
    )

    def staged(row: ResultRow, routed: bool) -> ResultRow:
        """``row`` with the router's and its first stage's fields."""
        return replace(
            row,
            routed=routed,
            router=model,
            router_version=prediction.model_version,
            first_stage_model=first.model,
            first_stage_version=first.model_version,
            first_stage_label=first.label,
            first_stage_score=first.score,
            first_stage_probabilities=first.probabilities,
        )

    index = int(prediction.extra[DOWNSTREAM_OUTPUT][0])
    if index < 0:
        return staged(first, routed=False)
    stage = router.downstream[index]
    failure = bytes(prediction.extra[ROUTE_ERROR_OUTPUT][0]).decode(errors="replace")
    if failure:
        row = error_row(
            path, stage.model, Reason.DOWNSTREAM_FAILED, f"{path}: {failure}", sop_instance_uid, frame
        )
        return staged(replace(row, model_version=stage.version), routed=True)
    answered = replace(prediction, model_version=stage.version)
    row = prediction_row(
        path,
        sop_instance_uid,
        frame,
        stage.model,
        stage.card,
        probabilities[: stage.card.num_classes],
        answered,
    )
    return staged(row, routed=True)


def error_row(
    path: str,
    model: str,
    reason: str,
    error: str,
    sop_instance_uid: str = "",
    frame: int | None = None,
    status: Status = "error",
) -> ResultRow:
    """The row of a file (or one of its radiographs) that got no prediction (``error``, or
    ``not_accepted`` outside the model's input contract), and why."""
    return ResultRow(path, status, sop_instance_uid, frame, model=model, error_reason=reason, error=error)


def internal_error(path: str, error: BaseException) -> str:
    """The text of an ``internal_error`` row: the file, the exception's type and its message."""
    return f"{path}: {type(error).__name__}: {error}"
