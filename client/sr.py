"""DICOM SR documents of classification results, one per classified radiograph: TID 1500.

The SR joins the study of its source radiograph (same Study Instance UID, patient and study
modules copied from the source) in a series of its own (one per study and model), so that a
PACS shows it next to the image. It is written for the site that owns the images and never
leaves it; nothing of the patient is logged here, and error messages name only files and UIDs.

Content tree: a Comprehensive SR holding a TID 1500 Measurement Report, built with highdicom's
templates (docs/reference/conformance.md, "Objects radserve creates")::

    CONTAINER (DCM 126000 "Imaging Measurement Report"), template 1500
      HAS CONCEPT MOD  Language; HAS OBS CONTEXT  Observer Type = Device, Device Observer UID / Name /
                       Manufacturer / Model Name (TID 1002, 1004)
      HAS CONCEPT MOD  Procedure Reported = (SCT 168537006 "Plain radiography")
      CONTAINS  Image Library (111028): the source, when its Patient Orientation can describe it
      CONTAINS  Imaging Measurements (126010)
        Measurement Group (TID 1501), one per model (a router's row: the first stage's, then the
        answering model's): Tracking Identifier + UID, Finding = the top label's code, Algorithm Name /
        Version / Parameters (TID 4019), Source of Measurement = the source image (frame), one NUM per
        class = its probability {ratio} named by the class's code, Threshold Value (DCM 122411) and a
        qualitative evaluation (99RADSERVE RS0005 "Decision") = the decided label's code or
        (SCT 260385009 "Negative") under the card's operating points
        Measurement Group (TID 1410), one per detected box: Tracking Identifier + UID, Finding = the
        box label's code, Image Region = closed POLYLINE on the source (frame), Probability
        (DCM 122157) = its score, Algorithm = the classifier's detector

Labels are coded by :func:`radserve.systems.finding_code` (SNOMED CT where known, else a private code
of ``99RADSERVE``, declared in the Coding Scheme Identification Sequence). Box coordinates are the
source image's (column, row) with (0, 0) the top-left corner of the first pixel, as DICOM's SCOORD
defines them and as the result rows give them (radserve.client.box_mapping). The source is also listed in
the Current Requested Procedure Evidence Sequence.
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
from radserve.reasons import Reason

__all__ = [
    "CODING_SCHEME",
    "SR_SERIES_NUMBER",
    "evidence_header",
    "frame_number",
    "radserve_version",
    "read_source_header",
    "save_private",
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
        raise InputError(str(path), Reason.NOT_DICOM, "not a DICOM file (no 'DICM' prefix)") from None
    except OSError as error:
        why = error.strerror or type(error).__name__
        raise InputError(str(path), Reason.UNREADABLE, f"cannot read the file ({why})") from None
    except Exception as error:  # pydicom raises many types on damaged headers
        raise InputError(
            str(path), Reason.SR_FAILED, f"cannot parse the header ({type(error).__name__})"
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
    header = evidence_header(source, path)
    frame = frame_number(row, header, path)

    now = _dt.datetime.now()
    sr_uid = generate_uid()
    software = [v for v in (model_version, f"radserve {radserve_version()}") if v]
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
        raise InputError(path, Reason.SR_FAILED, f"cannot build the SR ({type(error).__name__})") from error

    return save_private(document, output_dir / f"{sr_uid}.dcm")


def save_private(document: Dataset, target: Path) -> Path:
    """Write ``document`` to ``target`` atomically, readable by this user only (it carries the patient
    module of its source); create the folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as stream:
            document.save_as(stream, enforce_file_format=True)
            stream.flush()
            os.fsync(stream.fileno())  # on disk before the listener lets its source go
        restrict(partial)
        os.replace(partial, target)
        sync_folder(target.parent)
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


def evidence_header(source: Dataset, path: str) -> Dataset:
    """A pixel-less copy of ``source`` that highdicom can take as evidence (``source`` is not changed)."""
    missing = [keyword for keyword in _REQUIRED if not str(source.get(keyword) or "").strip()]
    if missing:
        raise InputError(path, Reason.SR_FAILED, f"the source lacks {', '.join(missing)}")
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


def frame_number(row: ResultRow, header: Dataset, path: str) -> int | None:
    """The 1-based frame to reference, or None for a single-frame source."""
    frames = int(header.get("NumberOfFrames") or 1)
    if row.frame is None:
        return None
    if not 1 <= row.frame <= frames:
        raise InputError(path, Reason.SR_FAILED, f"frame {row.frame} out of range 1..{frames}")
    return row.frame if frames > 1 else None


@contextlib.contextmanager
def _quiet_person_name_warnings() -> Iterator[None]:
    """highdicom warns about one-component person names quoting them: patient names stay out of logs."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"The string .* is unlikely to represent", category=UserWarning
        )
        yield


def radserve_version() -> str:
    try:
        return metadata.version("radserve")
    except metadata.PackageNotFoundError:
        return "unknown"
