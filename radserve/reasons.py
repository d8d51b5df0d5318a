"""The reason codes of result rows: one enumeration used by rows, retries, resume and metrics.

A row that is not ``ok`` names why in ``error_reason``. Values are the strings written to JSONL/CSV and
used as Prometheus label values, so they never change once released. A :data:`TRANSIENT` reason says
the input was not judged (the server was away, shed the request, or was reloading): the same input may
succeed later, so resume and the listener retry it instead of counting it done.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TRANSIENT", "Reason", "is_transient"]


class Reason(StrEnum):
    """Why a row is not ``ok`` (the ``error_reason`` column)."""

    # The input file
    NOT_DICOM = "not_dicom"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    NO_PIXEL_DATA = "no_pixel_data"
    BAD_DIMENSIONS = "bad_dimensions"
    INCONSISTENT_ATTRIBUTES = "inconsistent_attributes"
    DECODE_FAILED = "decode_failed"
    DECODE_TIMEOUT = "decode_timeout"
    DECODER_CRASHED = "decoder_crashed"
    UID_CONFLICT = "uid_conflict"
    # The server and the request
    OVERLOADED = "overloaded"
    SERVER_UNAVAILABLE = "server_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    VERSION_UNAVAILABLE = "version_unavailable"
    VERSION_MISMATCH = "version_mismatch"
    INFERENCE_FAILED = "inference_failed"
    DOWNSTREAM_FAILED = "downstream_failed"  # a router's second stage failed on the radiograph
    # After the answer
    SR_FAILED = "sr_failed"
    # radserve itself
    INTERNAL_ERROR = "internal_error"
    QUARANTINED = "quarantined"


TRANSIENT: frozenset[Reason] = frozenset(
    {Reason.OVERLOADED, Reason.SERVER_UNAVAILABLE, Reason.DEADLINE_EXCEEDED, Reason.VERSION_UNAVAILABLE}
)


def is_transient(reason: str) -> bool:
    """Whether a row with this ``error_reason`` may succeed if the same input is sent again.

    Args:
        reason: a row's ``error_reason`` (a :class:`Reason` value or any string).

    Returns:
        True for the reasons in :data:`TRANSIENT`; False for every other string, unknown ones included.
    """
    return reason in TRANSIENT
