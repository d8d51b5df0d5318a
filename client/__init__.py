"""radserve client: DICOM preprocessing, gRPC inference on Triton, result rows."""

from radserve.client.classify import ClassifyOptions, RunSummary, classify, prepare_file
from radserve.client.grpc_client import AsyncRadiographClient, Prediction, RetryPolicy
from radserve.client.results import ResultRow, ResultWriter
from radserve.errors import (
    ExportError,
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
