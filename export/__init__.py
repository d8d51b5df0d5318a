"""checkpoint → ONNX (fp32) → parity gate → Triton model repository."""

from export.architectures import ARCHITECTURES
from export.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from export.model_config import TARGETS, ServingOptions, build_config, parse_config, render_config
from export.parity import ParityReport, compare, gate
from export.pipeline import ExportRequest, ExportResult, export_checkpoint
from export.repository import publish, versions

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "TARGETS",
    "ExportRequest",
    "ExportResult",
    "ParityReport",
    "ServingOptions",
    "build_config",
    "compare",
    "export_checkpoint",
    "gate",
    "load_checkpoint",
    "parse_config",
    "publish",
    "render_config",
    "save_checkpoint",
    "versions",
]
