"""Typed exceptions raised by radserve; each carries a message fit for an error row or a log line."""

from __future__ import annotations

from radserve.reasons import Reason


class RadserveError(Exception):
    """Base class of every radserve error."""


class InputError(RadserveError):
    """An input file cannot be turned into a radiograph (not DICOM, truncated, unsupported, ...).

    ``reason`` is a short machine-friendly code (e.g. ``not_dicom``, ``no_pixel_data``) used as the
    metrics label and in result rows; ``str(error)`` names the file and says why.
    """

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = path
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class NotAcceptedError(InputError):
    """A valid DICOM instance outside the model's input contract (e.g. a CT sent to a radiograph model).

    ``reason`` names the attribute that failed (``modality``, ``sop_class``, ``photometric``,
    ``for_processing``, ``body_part``, ``view_position``); it is a refusal, not a failure.
    """


class ModelCardError(RadserveError):
    """A model's metadata is missing or inconsistent."""


class ServerError(RadserveError):
    """The Triton server could not be started, reached or used."""


class InferenceError(RadserveError):
    """A request failed on the server after every retry.

    ``reason`` is the result rows' code (:class:`~radserve.reasons.Reason`): ``overloaded`` (the server
    shed it and the retry budget was spent), ``server_unavailable`` (no server answered in time),
    ``deadline_exceeded`` (past its deadline after its retries), ``version_unavailable`` (the version
    the run is pinned to was unloaded), ``version_mismatch`` or ``inference_failed``.
    """

    def __init__(self, message: str, reason: str = Reason.INFERENCE_FAILED, attempts: int = 1) -> None:
        self.reason = reason
        self.attempts = attempts
        super().__init__(message)


class ExportError(RadserveError):
    """A model cannot be exported or was refused publication (e.g. failed its parity gate)."""


class DecodeWorkersError(RadserveError):
    """The decode worker processes of a run could not start (one error for the run, not per file)."""


class ClinicalError(RadserveError):
    """An evaluation, calibration or threshold cannot be computed (bad truth file, too few cases)."""


class ConfigurationError(RadserveError, ValueError):
    """A setting or option cannot be used (a malformed address, an unknown model, a bad combination).

    Also a :class:`ValueError`: a bad argument to a library function is one.
    """
