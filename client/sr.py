"""DICOM Comprehensive SR documents of classification results, one per classified radiograph.

The SR joins the study of its source radiograph (same Study Instance UID, patient and study
modules copied from the source) in a series of its own (one per study and model), so that a
PACS shows it next to the image. It is written for the site that owns the images and never
leaves it; nothing of the patient is logged here, and error messages name only files and UIDs.

Content tree (Comprehensive SR, no standard template; private codes use ``99RADSERVE``)::

    CONTAINER  (99RADSERVE, RS0001, "Radiograph classification")
      HAS OBS CONTEXT  Observer Type = (DCM 121007 Device), Device Observer UID / Name /
                       Manufacturer / Model Name            (TID 1004, from highdicom)
      CONTAINS CONTAINER  (DCM 125007, "Measurement Group")
        HAS CONCEPT MOD  TEXT (DCM 111001 "Algorithm Name")       = model name
        HAS CONCEPT MOD  TEXT (DCM 111003 "Algorithm Version")    = version, architecture, precision
        HAS CONCEPT MOD  TEXT (DCM 111002 "Algorithm Parameters") = architecture=..., precision=...,
                                                                    checkpoint_sha256=...
        CONTAINS  TEXT (DCM 121071 "Finding") = top label
          HAS PROPERTIES  NUM (99RADSERVE, RS0003, "Probability") = its score, unit {ratio}
          INFERRED FROM   IMAGE (DCM 121112 "Source of Measurement") = the source
                          (SOP Class, SOP Instance, Referenced Frame Number for multi-frame)
        CONTAINS  NUM (99RADSERVE, RS0002, "Class probability") = p, unit {ratio}   (one per class)
          HAS CONCEPT MOD  TEXT (99RADSERVE, RS0004, "Class") = label
        CONTAINS  TEXT (99RADSERVE, RS0005, "Decision") = label or "negative"  (model card with
          HAS PROPERTIES  NUM (99RADSERVE, RS0006, "Threshold") = t, {ratio}   operating points only)
        CONTAINS  TEXT (DCM 121071 "Finding") = a box's label                      (one per box)
          HAS PROPERTIES  NUM (99RADSERVE, RS0003, "Probability") = its score
          INFERRED FROM   SCOORD (DCM 111030 "Image Region") POLYLINE, closed rectangle
            SELECTED FROM  IMAGE = the source (frame)

Box coordinates are the source image's (column, row) with (0, 0) the top-left corner of the first
pixel, as DICOM's SCOORD defines them and as the result rows give them (radserve.client.boxes).

A router's row has two measurement groups: the first stage's (identification, finding, class
probabilities), then the answering model's as above. The source is also listed in the Current
Requested Procedure Evidence Sequence.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import ComprehensiveSR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, generate_uid

from radserve.client._sr_content import CODING_SCHEME, LO_MAX, MANUFACTURER, content_tree
from radserve.client.dicom import captured_warnings
from radserve.client.ownership import restrict, sync_folder
from radserve.client.results import ResultRow
from radserve.errors import InputError
from radserve.model_card import ModelCard

__all__ = [
    "CODING_SCHEME",
    "SR_SERIES_NUMBER",
    "read_source_header",
    "sr_series_uid",
    "write_classification_sr",
]

SR_SERIES_NUMBER = 9901
"""Series Number of the SR series (the same for every model; the series UID tells them apart)."""

_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
# Type 2 attributes highdicom reads from the source; absent ones are written empty.
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Not carried into the SR (highdicom would copy them into its Contributing Equipment): where the
# source was acquired identifies the site, and the SR needs it not.
_SITE_KEYWORDS = ("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName")


def read_source_header(path: Path) -> Dataset:
    """The data set of a DICOM file without its pixel data: what an SR needs of its source."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        raise InputError(str(path), "not_dicom", "not a DICOM file (no 'DICM' prefix)") from None
    except OSError as error:
        why = error.strerror or type(error).__name__
        raise InputError(str(path), "unreadable", f"cannot read the file ({why})") from None
    except Exception as error:  # pydicom raises many types on damaged headers
        raise InputError(
            str(path), "sr_failed", f"cannot parse the header ({type(error).__name__})"
        ) from None


def sr_series_uid(study_instance_uid: str, model: str, model_version: str = "") -> UID:
    """The deterministic Series Instance UID of the SRs of one model (name and version) in one study."""
    return generate_uid(entropy_srcs=["radserve-sr-series", study_instance_uid, model, model_version])


def write_classification_sr(
    row: ResultRow,
    card: ModelCard,
    source: pydicom.Dataset,
    output_dir: Path,
    *,
    model_version: str = "",
    first_stage: ModelCard | None = None,
) -> Path:
    """Write one Comprehensive SR of the classification ``row`` of ``source``; return its path.

    ``row`` must be a successful result (``status == "ok"``) of the radiograph ``source`` (its
    header is enough, see :func:`read_source_header`); for a multi-frame source, ``row.frame``
    (1-based) is referenced. The file is ``output_dir / "<SR SOP Instance UID>.dcm"``, written
    atomically. Raises :class:`InputError` (reason ``sr_failed``) when the source lacks what an
    SR needs, :class:`ValueError` when ``row`` is not a usable result for ``source``. A router's
    row (``card``: the model that answered) also gives the finding of ``first_stage``, the stage that
    chose the route, in a measurement group before the answering model's.
    """
    path = row.path or str(getattr(source, "filename", "") or "<dataset>")
    _check_row(row, source)
    header = _evidence_header(source, path)
    frame = _frame_number(row, header, path)

    now = _dt.datetime.now()
    sr_uid = generate_uid()
    software = [v for v in (model_version, f"radserve {_radserve_version()}") if v]
    try:
        root = content_tree(row, card, header, frame, model_version, first_stage)
        with captured_warnings(path):  # highdicom and pydicom quote the values they warn about
            document = ComprehensiveSR(
                evidence=[header],
                content=root,
                series_instance_uid=sr_series_uid(header.StudyInstanceUID, card.name, model_version),
                series_number=SR_SERIES_NUMBER,
                sop_instance_uid=sr_uid,
                instance_number=frame or 1,
                manufacturer=MANUFACTURER,
                is_complete=True,
                is_final=False,
                is_verified=False,
                manufacturer_model_name=card.name[:LO_MAX],
                software_versions=software,  # a list: pydicom warns on tuples
                series_description=f"radserve classification ({card.name})"[:LO_MAX],
                series_date=now.date(),
                series_time=now.time(),
                content_date=now.date(),
                content_time=now.time(),
                coding_schemes=[
                    CodingSchemeIdentificationItem(
                        designator=CODING_SCHEME,
                        name="radserve private codes",
                        responsible_organization="radserve",
                    )
                ],
            )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        # the message may quote patient attributes: keep only the type (the cause stays chained)
        raise InputError(path, "sr_failed", f"cannot build the SR ({type(error).__name__})") from error

    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{sr_uid}.dcm"
    partial = target.with_name(target.name + ".part")
    try:
        # only this user may read it: an SR carries the patient module of its source
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as stream:
            document.save_as(stream, enforce_file_format=True)
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the listener lets its source go
        restrict(partial)
        os.replace(partial, target)
        sync_folder(output_dir)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _check_row(row: ResultRow, source: Dataset) -> None:
    if row.status != "ok":
        raise ValueError(f"{row.path}: an SR is written for an ok result only, not {row.status!r}")
    if not row.label or not row.probabilities:
        raise ValueError(f"{row.path}: the result has no label or no probabilities")
    if row.label not in row.probabilities:
        raise ValueError(f"{row.path}: label {row.label!r} has no probability")
    values = [*row.probabilities.values(), row.score if row.score is not None else 0.0]
    if not all(math.isfinite(float(v)) for v in values):
        raise ValueError(f"{row.path}: non-finite probability")
    uid = source.get("SOPInstanceUID")
    if row.sop_instance_uid and uid and str(uid) != row.sop_instance_uid:
        raise ValueError(f"{row.path}: the result is for SOP instance {row.sop_instance_uid}, not {uid}")


def _evidence_header(source: Dataset, path: str) -> Dataset:
    """A pixel-less copy of ``source`` that highdicom can take as evidence (``source`` is not changed)."""
    missing = [keyword for keyword in _REQUIRED if not str(source.get(keyword) or "").strip()]
    if missing:
        raise InputError(path, "sr_failed", f"the source lacks {', '.join(missing)}")
    header = Dataset()
    for element in source:
        if element.keyword not in _PIXEL_KEYWORDS + _SITE_KEYWORDS:
            header.add(element)
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    if header.get("PatientSex") not in ("M", "F", "O", "", None):
        header.PatientSex = ""  # not a DICOM enumerated value: written empty rather than refused
    return header


def _frame_number(row: ResultRow, header: Dataset, path: str) -> int | None:
    """The 1-based frame to reference, or None for a single-frame source."""
    frames = int(header.get("NumberOfFrames") or 1)
    if row.frame is None:
        return None
    if not 1 <= row.frame <= frames:
        raise InputError(path, "sr_failed", f"frame {row.frame} out of range 1..{frames}")
    return row.frame if frames > 1 else None


@contextlib.contextmanager
def _quiet_person_name_warnings() -> Iterator[None]:
    """highdicom warns about one-component person names quoting them: patient names stay out of logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"The string .* is unlikely to represent", category=UserWarning
        )
        yield


def _radserve_version() -> str:
    try:
        return metadata.version("radserve")
    except metadata.PackageNotFoundError:
        return "unknown"
