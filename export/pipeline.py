"""checkpoint → ONNX → parity gate → model repository."""

from __future__ import annotations

import logging
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from client.model_card import ModelCard
from export.checkpoint import load_checkpoint
from export.model_config import ServingOptions, Target
from export.onnx_export import export_onnx
from export.parity import ParityReport, compare, gate, onnx_probabilities, torch_probabilities
from export.repository import publish
from export.samples import sample_images

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how strictly to check it."""

    checkpoint: Path
    name: str
    repository: Path
    target: Target = "embedded"
    samples: int = 32
    sample_folder: Path | None = None
    min_top1_agreement: float = 1.0
    max_abs_diff: float | None = 1e-3
    options: ServingOptions | None = None


@dataclass(frozen=True)
class ExportResult:
    card: ModelCard
    parity: ParityReport
    version_dir: Path


def tool_versions() -> dict[str, str]:
    """Versions of the tools that produced an export (recorded in the model card)."""
    versions = {"python": platform.python_version()}
    for package in ("radserve", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def export_checkpoint(request: ExportRequest) -> ExportResult:
    """Export, check parity against PyTorch, and publish a new version; raises ``ExportError``."""
    loaded = load_checkpoint(request.checkpoint, request.name)
    images = sample_images(loaded.card, request.samples, request.sample_folder)
    reference = torch_probabilities(loaded.model, loaded.card, images)
    with tempfile.TemporaryDirectory(prefix="radserve-export-") as work:
        onnx_path = Path(work) / "model.onnx"
        export_onnx(loaded.model, loaded.card, onnx_path)
        report = compare(reference, onnx_probabilities(onnx_path, images), "pytorch fp32")
        LOGGER.info("parity %s", report)
        gate(report, request.min_top1_agreement, request.max_abs_diff, f"{request.name} ({request.target})")
        card = loaded.card.replace(
            parity={"onnxruntime_fp32": report.to_dict()}, tool_versions=tool_versions()
        )
        version_dir = publish(request.repository, card, onnx_path, request.target, request.options)
    return ExportResult(card=card, parity=report, version_dir=version_dir)
