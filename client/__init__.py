"""radserve client: DICOM preprocessing, gRPC inference on Triton, result rows."""

from client.classify import ClassifyOptions, RunSummary, classify, prepare_file
from client.errors import (
    ExportError,
    InferenceError,
    InputError,
    ModelCardError,
    RadserveError,
    ServerError,
)
from client.grpc_client import AsyncRadiographClient, Prediction, RetryPolicy
from client.model_card import ModelCard
from client.results import ResultRow, ResultWriter

__all__ = [
    "AsyncRadiographClient",
    "ClassifyOptions",
    "ExportError",
    "InferenceError",
    "InputError",
    "ModelCard",
    "ModelCardError",
    "Prediction",
    "RadserveError",
    "ResultRow",
    "ResultWriter",
    "RetryPolicy",
    "RunSummary",
    "ServerError",
    "classify",
    "prepare_file",
]
