"""Input contracts: does a DICOM instance belong to what a model answers for? Header only.

One check for every way a radiograph reaches a model (``radserve classify``, the Locust user, and
any DICOM network ingestion): :func:`check_contract` on a data set, or :func:`read_accepted` for a
file. It reads attributes of the header only, so a refused instance costs a parse, never a decode.
Messages quote coded values (Modality, SOP Class UID, ...) and never patient attributes.
"""

from __future__ import annotations

import os
import re

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForProcessing,
)

from radserve.client.dicom import Radiograph, radiographs_from_dataset, read_dataset
from radserve.errors import NotAcceptedError
from radserve.model_card import InputContract

FOR_PROCESSING_SOP_CLASSES: frozenset[str] = frozenset(
    {
        DigitalXRayImageStorageForProcessing,
        DigitalMammographyXRayImageStorageForProcessing,
        DigitalIntraOralXRayImageStorageForProcessing,
    }
)
# (reason, attribute keyword, name in messages, contract field), checked in this order
_CHECKS = (
    ("modality", "Modality", "modality", "modalities"),
    ("sop_class", "SOPClassUID", "SOP class", "sop_classes"),
    ("photometric", "PhotometricInterpretation", "photometric interpretation", "photometric"),
    ("body_part", "BodyPartExamined", "body part", "body_parts"),
    ("view_position", "ViewPosition", "view position", "view_positions"),
)
_CODE = re.compile(r"[^A-Z0-9 _.]")


def check_contract(ds: Dataset, contract: InputContract, path: str) -> None:
    """Raise :class:`NotAcceptedError` naming the attribute and value when ``ds`` is outside ``contract``."""
    sop_class = _value(ds, "SOPClassUID")
    if not contract.for_processing and (
        sop_class in FOR_PROCESSING_SOP_CLASSES or _value(ds, "PresentationIntentType") == "FOR PROCESSING"
    ):
        raise NotAcceptedError(
            path,
            "for_processing",
            "a For Processing image (raw detector data, no display processing) is not accepted",
        )
    for reason, keyword, name, field_name in _CHECKS:
        accepted = tuple(getattr(contract, field_name))
        value = sop_class if keyword == "SOPClassUID" else _value(ds, keyword)
        if accepted and value not in {item.strip().upper() for item in accepted}:
            raise NotAcceptedError(
                path,
                reason,
                f"{name} {_shown(keyword, value)} not in {', '.join(_shown(keyword, a) for a in accepted)}",
            )


def read_accepted(path: str | os.PathLike[str], contract: InputContract) -> list[Radiograph]:
    """The radiographs of a file, decoded only once its header is inside ``contract``.

    Raises :class:`NotAcceptedError` for a refused instance, :class:`InputError` for an unusable file.
    """
    name = os.fsdecode(path)
    ds = read_dataset(name)
    check_contract(ds, contract, name)
    return radiographs_from_dataset(ds, name)


def _value(ds: Dataset, keyword: str) -> str:
    """A coded attribute as upper-case text ('' when absent or unreadable); SOP class from File Meta too."""
    try:
        value = ds.get(keyword)
        if not value and keyword == "SOPClassUID":
            value = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    except Exception:
        return ""
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__len__"):  # a multi-valued CS: its first value
        value = value[0] if len(value) else ""
    return _CODE.sub("", str(value).strip().upper())[:64]


def _shown(keyword: str, value: str) -> str:
    if not value:
        return "(absent)"
    if keyword == "SOPClassUID":
        name = UID(value).name
        return f"{value} ({name})" if name != value else value
    return value
