"""checkpoint → ONNX (fp32) → parity gate → Triton model repository."""

from radserve.export.architectures import ARCHITECTURES
from radserve.export.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from radserve.export.model_config import TARGETS, ServingOptions, build_config, parse_config, render_config
from radserve.export.parity import ParityReport, compare, gate
from radserve.export.pipeline import EngineOptions, ExportRequest, ExportResult, export_checkpoint
from radserve.export.precision import PRECISIONS, variant_name
from radserve.export.repo_check import check_repository
from radserve.export.repository import prune, publish
from radserve.export.sources import ProgramMetadata, load_source

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "PRECISIONS",
    "TARGETS",
    "EngineOptions",
    "ExportRequest",
    "ExportResult",
    "ParityReport",
    "ProgramMetadata",
    "ServingOptions",
    "build_config",
    "check_repository",
    "compare",
    "export_checkpoint",
    "gate",
    "load_checkpoint",
    "load_source",
    "parse_config",
    "prune",
    "publish",
    "render_config",
    "save_checkpoint",
    "variant_name",
]
