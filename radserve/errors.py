"""Typed exceptions raised by radserve; each carries a message fit for an error row or a log line."""

from __future__ import annotations


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


class ModelCardError(RadserveError):
    """A model's metadata is missing or inconsistent."""


class ServerError(RadserveError):
    """The Triton server could not be started, reached or used."""


class InferenceError(RadserveError):
    """A request failed on the server after every retry."""


class ExportError(RadserveError):
    """A model cannot be exported or was refused publication (e.g. failed its parity gate)."""


class ConfigurationError(RadserveError):
    """A setting or option cannot be used (a malformed address, an unknown model, a bad combination)."""
