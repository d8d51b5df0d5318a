"""MRI studies to wire tensors: T1W + T2W sagittal series, lesion slice ± k, one tensor per study.

For each study (StudyInstanceUID) the sagittal series are found (slice normal along the patient's
left-right axis), each classified as T1W or T2W, their slices ordered along the normal, the lesion
slice chosen (a given index along the normal, else the central slice) with ``k`` neighbours on each
side, and each series windowed and resized. The tensor is ``uint8 [2(2k+1), H, W]``: T1W slices
``s-k .. s+k``, then the T2W slices at the same positions.

**Sequence.** By acquisition first: inversion recovery (``ScanningSequence`` IR: STIR, FLAIR) is
neither; ``RepetitionTime`` ≤ 1000 ms with ``EchoTime`` ≤ 30 ms is T1W; TR ≥ 1500 ms with TE ≥ 60 ms
is T2W. Otherwise the ``SequenceName`` and then the ``SeriesDescription`` decide (``T1``/``T2`` as a
word). Several candidates: the one with most slices.

**Window.** MR files rarely carry a meaningful VOI LUT, and their stored range depends on the
receiver gain: each series is windowed from its 1st to its 99.5th percentile of modality values
over all its slices (one window per series, so neighbouring slices share it), mapped to 0..255.
Modality values come from the display pipeline's first stages (:func:`modality_values`: High Bit,
Bits Stored mask, sign extension, Modality LUT or rescale), so signed MR keeps its negative values;
Pixel Padding Value is left out of the window and rendered black.

**Enhanced MR** (Enhanced MR Image Storage, one multi-frame instance whose slices are described by
functional groups) is not read: a study whose T1W or T2W series could only come from such an
instance fails with ``enhanced_mr`` naming it, never as a missing series.

Errors are :class:`StudyError` with a reason: ``missing_t1w_series``, ``missing_t2w_series``,
``enhanced_mr``, ``too_few_slices``, ``inconsistent_slice_spacing``, or an input error's reason.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from radserve.client.contract import check_contract
from radserve.client.dicom import decode, display_params, modality_values, pixel_info, read_dataset, resize
from radserve.client.results import ResultRow
from radserve.errors import InputError, NotAcceptedError, RadserveError
from radserve.model_card import ModelCard

Weighting = Literal["T1", "T2"]
WINDOW_PERCENTILES = (1.0, 99.5)
SPACING_TOLERANCE = 0.1  # relative deviation of a slice gap from the median gap


class StudyError(RadserveError):
    """A study that cannot become a tensor; ``reason`` is the row's error code."""

    def __init__(self, study: str, reason: str, detail: str) -> None:
        self.study = study
        self.reason = reason
        super().__init__(f"study {study}: {detail}")


@dataclass(frozen=True)
class SliceFile:
    """One MR slice: where it came from and its data set (pixels read on demand)."""

    path: str
    dataset: Dataset


@dataclass(frozen=True)
class Series:
    uid: str
    weighting: Weighting | None
    slices: tuple[SliceFile, ...]  # ordered along the normal
    positions: np.ndarray[Any, Any]  # mm along the normal, ascending


def group_studies(slices: Iterable[SliceFile]) -> dict[str, list[SliceFile]]:
    """Slices by StudyInstanceUID, in first-seen order."""
    studies: dict[str, list[SliceFile]] = defaultdict(list)
    for item in slices:
        studies[str(item.dataset.get("StudyInstanceUID", ""))].append(item)
    return dict(studies)


def _float(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def weighting(ds: Dataset) -> Weighting | None:
    """T1, T2 or None (see the module's rules)."""
    scanning = ds.get("ScanningSequence", "")
    scanning = {scanning} if isinstance(scanning, str) else set(scanning)
    if "IR" in scanning:
        return None
    tr, te = _float(ds, "RepetitionTime"), _float(ds, "EchoTime")
    if tr is not None and te is not None:
        if tr <= 1000 and te <= 30:
            return "T1"
        if tr >= 1500 and te >= 60:
            return "T2"
    for keyword in ("SequenceName", "SeriesDescription"):
        text = str(ds.get(keyword, "")).upper()
        if "STIR" in text or "FLAIR" in text:
            return None
        found = set(re.findall(r"(?<![A-Z0-9])T([12])(?:W|WI)?(?![A-Z0-9])", text))
        if len(found) == 1:
            return "T1" if found == {"1"} else "T2"
    return None


def _normal(ds: Dataset) -> np.ndarray[Any, Any] | None:
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return None
    values = np.asarray([float(v) for v in orientation])
    normal = np.cross(values[:3], values[3:])
    length = np.linalg.norm(normal)
    return normal / length if length > 0.5 else None


def multi_frame(ds: Dataset) -> bool:
    """An instance holding several slices as frames (Enhanced MR and other multi-frame IODs)."""
    try:
        return int(ds.get("NumberOfFrames") or 1) > 1
    except (TypeError, ValueError):
        return True


def sagittal_series(study: str, slices: Sequence[SliceFile]) -> list[Series]:
    """The study's sagittal series (normal within ~35° of left-right), slices ordered along it;
    multi-frame instances are left out (see the module's Enhanced MR rule)."""
    by_series: dict[str, list[SliceFile]] = defaultdict(list)
    for item in slices:
        if not multi_frame(item.dataset):
            by_series[str(item.dataset.get("SeriesInstanceUID", ""))].append(item)
    found = []
    for uid, members in by_series.items():
        normal = _normal(members[0].dataset)
        if normal is None or abs(normal[0]) < 0.8 or members[0].dataset.get("ImagePositionPatient") is None:
            continue
        positions = np.asarray(
            [float(np.dot(normal, [float(v) for v in m.dataset.ImagePositionPatient])) for m in members]
        )
        order = np.argsort(positions, kind="stable")
        found.append(
            Series(uid, weighting(members[0].dataset), tuple(members[i] for i in order), positions[order])
        )
    return found


def pick(study: str, series: Sequence[Series], wanted: Weighting, slices: Sequence[SliceFile] = ()) -> Series:
    """The ``wanted`` series with most slices; ``slices`` (the study's) name an Enhanced MR instance
    when there is none."""
    candidates = [s for s in series if s.weighting == wanted]
    enhanced = next((item for item in slices if multi_frame(item.dataset)), None)
    if not candidates and enhanced is not None:
        sop_class = UID(str(enhanced.dataset.get("SOPClassUID", "")))
        raise StudyError(
            study,
            "enhanced_mr",
            f"no sagittal {wanted}W series of single-slice instances; {enhanced.path} is a multi-frame "
            f"{sop_class.name} instance ({enhanced.dataset.get('NumberOfFrames')} frames), whose "
            "functional groups are not read: send the series as MR Image Storage (one slice per instance)",
        )
    if not candidates:
        raise StudyError(study, f"missing_{wanted.lower()}w_series", f"no sagittal {wanted}W series")
    return max(candidates, key=lambda s: len(s.slices))


def _check_spacing(study: str, series: Series) -> None:
    gaps = np.diff(series.positions)
    if len(gaps) == 0:
        return
    median = float(np.median(gaps))
    if median <= 0 or np.any(np.abs(gaps - median) > SPACING_TOLERANCE * median + 0.01):
        raise StudyError(
            study,
            "inconsistent_slice_spacing",
            f"{series.weighting}W series {series.uid}: slice gaps {np.round(gaps, 2).tolist()} mm",
        )


def _window(study: str, series: Series, chosen: Sequence[int], card: ModelCard) -> list[np.ndarray[Any, Any]]:
    """Every chosen slice of ``series`` as uint8 under the series' percentile window."""
    values, padding = [], []
    for item in series.slices:
        try:
            info = pixel_info(item.dataset, item.path)
            frame = decode(item.dataset, info, item.path).frames[0]
            params = display_params(item.dataset, info, item.path, card.rendering)
        except InputError as error:
            raise StudyError(study, error.reason, str(error)) from None
        modality, padded = modality_values(frame, params)
        values.append(modality.astype(np.float32))
        padding.append(padded)
    stack, outside = np.stack(values), np.stack(padding)
    low, high = np.percentile(stack[~outside] if not outside.all() else stack, WINDOW_PERCENTILES)
    scale = 255.0 / max(float(high - low), 1e-6)
    images = [np.clip((values[i] - low) * scale, 0, 255).round().astype(np.uint8) for i in chosen]
    for image, i in zip(images, chosen, strict=True):
        image[padding[i]] = 0
    return images


def study_tensor(
    study: str, slices: Sequence[SliceFile], card: ModelCard, lesion_index: int | None = None
) -> np.ndarray[Any, Any]:
    """``uint8 [channels, H, W]`` for one study, or :class:`StudyError`.

    ``lesion_index`` counts T1W slices along the normal (0-based); the T2W slice nearest to it in
    position is the T2W centre. ``card.channels`` fixes k = (channels / 2 - 1) / 2.
    """
    k = (card.channels // 2 - 1) // 2
    series = sagittal_series(study, slices)
    t1, t2 = pick(study, series, "T1", slices), pick(study, series, "T2", slices)
    centres: list[int] = []
    for each in (t1, t2):
        if len(each.slices) < 2 * k + 1:
            raise StudyError(
                study,
                "too_few_slices",
                f"{each.weighting}W series has {len(each.slices)} slice(s), needs {2 * k + 1}",
            )
        _check_spacing(study, each)
    centre = len(t1.slices) // 2 if lesion_index is None else lesion_index
    for each in (t1, t2):
        if each is t2:
            centre = int(np.argmin(np.abs(t2.positions - t1.positions[centres[0]])))
        if not k <= centre < len(each.slices) - k:
            raise StudyError(
                study,
                "too_few_slices",
                f"lesion slice {centre} ± {k} is outside the {each.weighting}W series' "
                f"{len(each.slices)} slices",
            )
        centres.append(centre)
    planes = []
    for each, middle in zip((t1, t2), centres, strict=True):
        for image in _window(study, each, range(middle - k, middle + k + 1), card):
            planes.append(resize(image, card.input_size, card.resize))
    return np.stack(planes)


def read_slices(paths: Iterable[str]) -> tuple[list[SliceFile], list[ResultRow]]:
    """Readable MR slices, and an error row for every file that is not one."""
    slices, errors = [], []
    for path in paths:
        try:
            slices.append(SliceFile(path, read_dataset(path)))
        except InputError as error:
            errors.append(ResultRow(path=path, status="error", error_reason=error.reason, error=str(error)))
    return slices, errors


def accepted_slices(
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
            row = ResultRow(member.path, "not_accepted", uid, model=model, study_instance_uid=study)
            refused.append(replace(row, error_reason=refusal.reason, error=str(refusal)))
    return accepted, refused


def study_tensors(
    slices: Sequence[SliceFile], card: ModelCard, model: str, lesion_index: int | None = None
) -> Iterator[tuple[str, str, np.ndarray[Any, Any] | StudyError | None, list[ResultRow]]]:
    """Per study: the folder its slices share, its StudyInstanceUID, its tensor or why there is none
    (None: no slice inside the card's input contract), and a row per slice the contract refused."""
    for study, members in group_studies(slices).items():
        where = os.path.commonpath([m.path for m in members])
        accepted, refused = accepted_slices(members, card, model, study)
        if not accepted:
            yield where, study, None, refused
            continue
        try:
            yield where, study, study_tensor(study, accepted, card, lesion_index), refused
        except StudyError as error:
            yield where, study, error, refused
