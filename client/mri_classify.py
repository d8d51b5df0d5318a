"""Classify MRI studies: files → studies → one tensor and one result row per study.

Every input file is accounted for: an unreadable file gets its own error row; readable slices are
grouped by StudyInstanceUID and each study gets one row, keyed by its StudyInstanceUID, with the
prediction or the reason it could not be built (:mod:`radserve.client.mri_series`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import numpy as np

from radserve.client.contract import check_contract
from radserve.client.dicom._read import read_dataset
from radserve.client.inputs import discover
from radserve.client.mri_series import SliceFile, StudyError, group_studies, study_tensor
from radserve.client.results import ResultRow
from radserve.client.sync_client import RadiographClient
from radserve.errors import InferenceError, InputError, NotAcceptedError
from radserve.model_card import ModelCard
from radserve.reasons import Reason

Infer = Callable[[np.ndarray], tuple[np.ndarray, str]]


def read_slices(paths: Iterable[str]) -> tuple[list[SliceFile], list[ResultRow]]:
    """Readable MR slices, and an error row for every file that is not one."""
    slices, errors = [], []
    for path in paths:
        try:
            slices.append(SliceFile(path, read_dataset(path)))
        except InputError as error:
            errors.append(ResultRow(path=path, status="error", error_reason=error.reason, error=str(error)))
    return slices, errors


def study_rows(
    slices: Sequence[SliceFile],
    card: ModelCard,
    infer: Infer,
    model: str,
    lesion_index: int | None = None,
) -> list[ResultRow]:
    """One row per study; ``infer(batch) -> (probabilities [1, C], version)`` asks the model.

    Slices outside the card's input contract are left out of their study: a study with none left is
    one ``not_accepted`` row naming the first refusal, else each refused slice has its own row.
    """
    rows = []
    for study, members in group_studies(slices).items():
        where = os.path.commonpath([m.path for m in members])
        base = ResultRow(path=where, status="error", model=model, study_instance_uid=study)
        members, refused = _accepted(members, card, model, study)
        if not members:
            rows.append(replace(refused[0], path=where, sop_instance_uid=""))
            continue
        rows.extend(refused)
        try:
            tensor = study_tensor(study, members, card, lesion_index)
            probabilities, version = infer(tensor[None])
        except StudyError as error:
            rows.append(replace(base, error_reason=error.reason, error=str(error)))
            continue
        except InferenceError as error:
            rows.append(replace(base, error_reason=Reason.INFERENCE_FAILED, error=str(error)))
            continue
        scores = {label: float(p) for label, p in zip(card.labels, probabilities[0], strict=True)}
        best = max(scores, key=scores.__getitem__)
        rows.append(
            ResultRow(
                path=where,
                status="ok",
                model=model,
                model_version=version,
                label=best,
                score=scores[best],
                probabilities=scores,
                study_instance_uid=study,
            )
        )
    return rows


def _accepted(
    members: Sequence[SliceFile], card: ModelCard, model: str, study: str
) -> tuple[list[SliceFile], list[ResultRow]]:
    """The slices inside ``card``'s contract, and a ``not_accepted`` row for each of the others."""
    accepted, refused = [], []
    for member in members:
        try:
            check_contract(member.dataset, card.accepts, member.path)
            accepted.append(member)
        except NotAcceptedError as refusal:
            uid = str(member.dataset.get("SOPInstanceUID", ""))
            refused.append(
                ResultRow(
                    member.path,
                    "not_accepted",
                    uid,
                    model=model,
                    study_instance_uid=study,
                    error_reason=refusal.reason,
                    error=str(refusal),
                )
            )
    return accepted, refused


def classify_studies(
    paths: Sequence[str | os.PathLike[str]], model: str, url: str, lesion_index: int | None = None
) -> list[ResultRow]:
    """Rows for every study under ``paths`` (files or folders), served by ``model`` at ``url``."""
    slices, errors = read_slices(str(p) for p in discover(paths).files)
    with RadiographClient(url) as client:
        card = client.model_card(model)

        def infer(batch: np.ndarray) -> tuple[np.ndarray, str]:
            prediction = client.infer(model, batch)
            return prediction.probabilities, prediction.model_version

        return errors + study_rows(slices, card, infer, model, lesion_index)
