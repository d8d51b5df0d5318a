"""radserve client: DICOM files to result rows through Triton, as an importable, typed API.

The public surface is what ``__all__`` lists (docs/reference/python-api.md;
docs/design.md, "Client session"); other modules are the parts it is built from. A
:class:`Session` (blocking twin :class:`SyncSession`) starts decode workers, channels and the card
once for many runs; :func:`classify` and :func:`classify_paths` are one-run sessions. Rows are
:class:`ResultRow` dataclasses whose fields are the JSONL keys (``row.to_dict()``), and a run's
counts a :class:`RunSummary` (``summary.to_dict()``).
"""

from radserve.client.classify import ClassifyOptions, RunSummary, classify
from radserve.client.grpc_client import AsyncRadiographClient, ConnectionOptions, Prediction, RetryPolicy
from radserve.client.results import ResultRow, ResultWriter
from radserve.client.session import Session
from radserve.client.sync_client import RadiographClient, SyncSession, classify_paths
from radserve.errors import (
    DecodeWorkersError,
    InferenceError,
    InputError,
    ModelCardError,
    RadserveError,
    ServerError,
)
from radserve.model_card import ModelCard

__all__ = [
    "AsyncRadiographClient",
    "ClassifyOptions",
    "ConnectionOptions",
    "DecodeWorkersError",
    "InferenceError",
    "InputError",
    "ModelCard",
    "ModelCardError",
    "Prediction",
    "RadiographClient",
    "RadserveError",
    "ResultRow",
    "ResultWriter",
    "RetryPolicy",
    "RunSummary",
    "ServerError",
    "Session",
    "SyncSession",
    "classify",
    "classify_paths",
]
