"""Input contracts: does a DICOM instance belong to what a model answers for? Header only.

One check for every way a radiograph reaches a model (``radserve classify``, the Locust user, and
any DICOM network ingestion): :func:`check_contract` on a data set, or :func:`read_accepted` for a
file. It reads attributes of the header only, so a refused instance costs a parse, never a decode.
Messages quote coded values (Modality, SOP Class UID, ...) and never patient attributes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

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

__all__ = ["FOR_PROCESSING_SOP_CLASSES", "ImageFacts", "check_contract", "read_accepted"]

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
_BACKSLASH = "\\"  # the separator of DICOM's multiple values
# Coded sequences read where the free-text attribute is empty: attribute -> (sequence, code -> term).
# View Code Sequence (CID 4010) codes with a View Position term (PS3.3 C.8.11.5); other codes (and
# Anatomic Region Sequence codes, CID 4031) match by their Code Meaning in capitals.
_CODED = {
    "BodyPartExamined": ("AnatomicRegionSequence", {"SCT:16953009": "ELBOW"}),
    "ViewPosition": (
        "ViewCodeSequence",
        {"SCT:399348003": "AP", "SCT:272479007": "PA", "SCT:399173006": "LL", "SCT:399198007": "RL"},
    ),
}


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """Header attributes a reader of the results needs beside the answer (the row's fields of the same
    names); '' when absent."""

    image_laterality: str = ""
    burned_in_annotation: str = ""  # YES / NO
    lossy_image_compression: str = ""  # 00 / 01

    @classmethod
    def of(cls, ds: Dataset) -> ImageFacts:
        """The facts of a data set (Image Laterality, else Laterality)."""
        return cls(
            _value(ds, "ImageLaterality") or _value(ds, "Laterality"),
            _value(ds, "BurnedInAnnotation"),
            _value(ds, "LossyImageCompression"),
        )


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
        value = sop_class if keyword == "SOPClassUID" else _value(ds, keyword) or _coded(ds, keyword)
        if accepted and value not in {item.strip().upper() for item in accepted}:
            raise NotAcceptedError(
                path,
                reason,
                f"{name} {_shown(keyword, value)} not in {', '.join(_shown(keyword, a) for a in accepted)}",
            )
    _check_image(ds, contract, path)


def _check_image(ds: Dataset, contract: InputContract, path: str) -> None:
    """Image Type, Burned In Annotation and Lossy Image Compression against the contract."""
    image_type = _values(ds, "ImageType")
    refused = [
        value for value in image_type if value in {item.upper() for item in contract.refused_image_types}
    ]
    if refused:
        raise NotAcceptedError(
            path,
            "image_type",
            f"image type {_BACKSLASH.join(image_type)} is {refused[0]}, which is not accepted",
        )
    facts = ImageFacts.of(ds)
    if contract.refuse_burned_in_annotation and facts.burned_in_annotation != "NO":
        shown = facts.burned_in_annotation or "(absent)"
        raise NotAcceptedError(
            path, "burned_in_annotation", f"burned in annotation {shown}: only NO is accepted"
        )
    if contract.refuse_lossy_compression and facts.lossy_image_compression == "01":
        raise NotAcceptedError(path, "lossy_compression", "lossy image compression 01 is not accepted")


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


def _values(ds: Dataset, keyword: str) -> list[str]:
    """Every value of a coded multi-valued attribute, upper-case ([] when absent or unreadable)."""
    try:
        value = ds.get(keyword)
    except Exception:
        return []
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [_CODE.sub("", str(item).strip().upper())[:16] for item in items]


def _coded(ds: Dataset, keyword: str) -> str:
    """The term a coded sequence gives for an empty free-text attribute ('' without one)."""
    if keyword not in _CODED:
        return ""
    sequence, terms = _CODED[keyword]
    try:
        item = ds.get(sequence)[0]
        code = f"{item.CodingSchemeDesignator}:{item.CodeValue}"
        meaning = str(item.CodeMeaning)
    except Exception:
        return ""
    return terms.get(code) or _CODE.sub("", meaning.strip().upper())[:64]


def _shown(keyword: str, value: str) -> str:
    if not value:
        return "(absent)"
    if keyword == "SOPClassUID":
        name = UID(value).name
        return f"{value} ({name})" if name != value else value
    return value
