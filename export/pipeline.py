"""checkpoint → ONNX fp32 → (fp16 | int8 Q/DQ ONNX) → parity gates → (TensorRT plan) → repository.

Every variant is gated against the FP32 PyTorch reference on the same radiographs before anything
is published; the figures go into its model card (``parity["onnxruntime_<precision>"]``, plus
``parity["tensorrt_<precision>"]`` where a plan was built and run). Variants of one model are
published side by side as separate Triton models (:func:`export.precision.variant_name`).
"""

from __future__ import annotations

import logging
import platform
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radserve.errors import ExportError
from radserve.export.checkpoint import LoadedCheckpoint
from radserve.export.model_config import ServingOptions
from radserve.export.onnx_export import export_onnx as export_onnx_file
from radserve.export.parity import (
    ParityReport,
    compare,
    gate,
    onnx_probabilities,
    openvino_probabilities,
    torch_probabilities,
)
from radserve.export.precision import (
    INT8_CALIBRATION,
    PRECISIONS,
    convert_fp16,
    int8_recipe,
    quantize_int8,
    variant_name,
)
from radserve.export.samples import sample_images
from radserve.export.sources import ProgramMetadata, load_source
from radserve.export.targets import Device, ServingTarget, get_target
from radserve.model_card import CpuEngine, InputContract, ModelCard, OodFlag, ParityRecord, Precision
from radserve.settings import SETTINGS
from radserve.synthetic.dataset import REGIONS
from radserve.systems import GRADCAM_SYSTEM_OUTPUT, get_system

if TYPE_CHECKING:
    from radserve.export.gradcam import GradCamCompanion

LOGGER = logging.getLogger(__name__)

# Top-1 agreement with the FP32 PyTorch reference required by default.
_GATES = SETTINGS.export
DEFAULT_MIN_TOP1: dict[Precision, float] = {
    "fp32": _GATES.fp32_min_top1,
    "fp16": _GATES.reduced_min_top1,
    "int8": _GATES.reduced_min_top1,
    "bf16": _GATES.reduced_min_top1,
}
DEFAULT_MAX_ABS_DIFF: dict[Precision, float | None] = {
    "fp32": _GATES.fp32_max_abs_diff,
    "fp16": _GATES.reduced_max_abs_diff,
    "int8": _GATES.reduced_max_abs_diff,
    "bf16": _GATES.reduced_max_abs_diff,
}


@dataclass(frozen=True)
class EngineOptions:
    """How the TensorRT plan of the ``tensorrt`` target is built (see export/tensorrt_plan.py)."""

    workspace_bytes: int = SETTINGS.export.tensorrt_workspace_bytes
    timing_cache: Path | None = None
    hardware_compatible: bool = False
    version_compatible: bool = False
    optimization_level: int | None = None  # TensorRT builder optimization level 0-5; None: its default


@dataclass(frozen=True)
class ExportRequest:
    """What to export and how strictly to check it.

    ``min_top1_agreement``/``max_abs_diff`` of ``None`` take the per-precision defaults
    (:data:`DEFAULT_MIN_TOP1`, :data:`DEFAULT_MAX_ABS_DIFF`); a value applies to every precision.
    ``program`` is required for a TorchScript or ``.pt2`` source and absent for a radserve checkpoint.
    """

    checkpoint: Path
    name: str
    repository: Path
    target: str = "embedded"
    # the target's device (radserve.export.targets); None: its default (onnxruntime: gpu)
    device: Device | None = None
    samples: int = SETTINGS.export.parity_samples
    sample_folder: Path | None = None
    min_top1_agreement: float | None = None
    max_abs_diff: float | None = None
    options: ServingOptions | None = None
    precisions: tuple[Precision, ...] = ("fp32",)
    # the engine the embedded target runs fp32 (and int8) with; bf16 always runs on openvino
    cpu_engine: CpuEngine = "onnxruntime"
    calibration_samples: int = SETTINGS.export.calibration_samples
    program: ProgramMetadata | None = None
    keep_versions: int | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    # where the gated ONNX (and, for tensorrt, the plan) stays for trtexec; None: a temporary folder
    work_dir: Path | None = None
    # int8 activations: "s8s8" (TensorRT), "u8s8" (fast ONNX Runtime CPU kernels), "auto": by target
    int8_scheme: str = "auto"
    int8_calibration: str = INT8_CALIBRATION  # int8 activation ranges: a key of INT8_CALIBRATIONS
    # what the model accepts (written into its card); None keeps the source's (radiograph defaults)
    accepts: InputContract | None = None
    # card fields set before export (calibrate --publish); the temperature goes into the graph
    card_updates: Mapping[str, Any] = field(default_factory=dict)
    # also publish the Grad-CAM companion NAME_gradcam (export/gradcam.py; beside a TensorRT plan as
    # an onnxruntime model); a system whose outputs include Grad-CAM always has it
    gradcam: bool = False
    # a served system's contract (radserve.systems) the checkpoint must fit; None: the checkpoint's own
    system: str | None = None

    def serving_target(self) -> ServingTarget:
        """The target named by ``target`` on ``device``."""
        return get_target(self.target, self.device)

    def resolved_int8_scheme(self) -> str:
        if self.int8_scheme != "auto":
            return self.int8_scheme
        return self.serving_target().int8_scheme(self.options)


@dataclass(frozen=True)
class Variant:
    """One published precision variant."""

    precision: Precision
    card: ModelCard
    parity: ParityReport
    version_dir: Path


@dataclass(frozen=True)
class ExportResult:
    variants: tuple[Variant, ...]
    gradcam_dir: Path | None = None  # the Grad-CAM companion's version folder, when published

    @property
    def card(self) -> ModelCard:
        return self.variants[0].card

    @property
    def parity(self) -> ParityReport:
        return self.variants[0].parity

    @property
    def version_dir(self) -> Path:
        return self.variants[0].version_dir


def tool_versions() -> dict[str, str]:
    """Versions of the tools that produced an export (recorded in the model card)."""
    versions = {"python": platform.python_version()}
    for package in ("radserve", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "tensorrt"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def thresholds(request: ExportRequest, precision: Precision) -> tuple[float, float | None]:
    min_top1 = request.min_top1_agreement
    max_abs = request.max_abs_diff if request.max_abs_diff is not None else DEFAULT_MAX_ABS_DIFF[precision]
    return (DEFAULT_MIN_TOP1[precision] if min_top1 is None else min_top1), max_abs


def export_checkpoint(request: ExportRequest) -> ExportResult:
    """Export, gate every precision against PyTorch fp32, publish each as a new version.

    Raises :class:`ExportError` (parity refused, TensorRT unavailable: with the trtexec command)
    or :class:`ModelCardError` (bad source). Nothing is published unless every variant passed.
    """
    return request.serving_target().export(request)


def export_onnx(request: ExportRequest, target: ServingTarget) -> ExportResult:
    """The ONNX route of :func:`export_checkpoint`: gated ONNX variants, published by ``target``."""
    unknown = [p for p in request.precisions if p not in PRECISIONS]
    if unknown or not request.precisions:
        raise ExportError(f"precisions must be some of {list(PRECISIONS)}, got {list(request.precisions)}")
    openvino = [p for p in request.precisions if variant_engine(request, p) == "openvino"]
    if openvino and target.name != "embedded":
        raise ExportError(
            f"the {target.name} target serves ONNX Runtime (or TensorRT) only: {', '.join(openvino)} on "
            "OpenVINO needs --target embedded"
        )
    loaded = load_source(request.checkpoint, request.name, request.program)
    if request.system is not None:
        card = get_system(request.system).apply(loaded.card, loaded.network_channels)
        loaded = replace(loaded, card=card)
    if request.card_updates:
        loaded = replace(loaded, card=loaded.card.replace(**request.card_updates))
    images = sample_images(loaded.card, request.samples, request.sample_folder)
    reference = torch_probabilities(loaded.model, loaded.card, images)
    with tempfile.TemporaryDirectory(prefix="radserve-export-") as temporary:
        work = target.work_folder(request) or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        fp32_path = work / f"{request.name}_fp32.onnx"
        export_onnx_file(loaded.model, loaded.card, fp32_path)
        validation = "the samples folder" if request.sample_folder else "synthetic radiographs"
        base_card = loaded.card.replace(
            tool_versions=tool_versions(),
            accepts=request.accepts or loaded.card.accepts,
            ood=ood_threshold(reference, validation),
        )
        fp32_report = compare(reference, onnx_probabilities(fp32_path, images), "pytorch fp32")
        LOGGER.info("parity fp32 %s", fp32_report)
        gate(fp32_report, *thresholds(request, "fp32"), f"{request.name} (onnxruntime fp32)")

        candidates = _gated_variants(request, base_card, images, reference, (fp32_path, fp32_report), work)
        # the companion is gated before anything is published
        companion = _gradcam_companion(request, loaded, base_card, images, reference, work)
        published = target.publish_candidates(request, candidates, images, reference, work)
        result = _with_companion(ExportResult(tuple(published)), companion, request, target.companion())
    return result


def variant_engine(request: ExportRequest, precision: Precision) -> CpuEngine:
    """The CPU engine of a variant: OpenVINO for bf16 (ONNX Runtime has no bf16 CPU kernels), fp16 on
    ONNX Runtime (OpenVINO runs its fp16 graph at its own precision), else the request's."""
    if precision == "bf16":
        return "openvino"
    return "onnxruntime" if precision == "fp16" else request.cpu_engine


def _gated_variants(
    request: ExportRequest,
    base_card: ModelCard,
    images: np.ndarray,
    reference: np.ndarray,
    fp32: tuple[Path, ParityReport],
    work: Path,
) -> list[tuple[Precision, ModelCard, ParityReport, Path]]:
    """Each requested precision converted from the fp32 ONNX and gated against PyTorch fp32 on the
    engine that will serve it (bf16: the fp32 graph under OpenVINO's bf16 inference precision)."""
    fp32_path, fp32_report = fp32
    candidates: list[tuple[Precision, ModelCard, ParityReport, Path]] = []
    for precision in request.precisions:
        engine = variant_engine(request, precision)
        path, report = fp32_path, fp32_report
        if precision in ("fp16", "int8"):
            path = work / f"{request.name}_{precision}.onnx"
            if precision == "fp16":
                convert_fp16(fp32_path, path)
            else:
                scheme, method = request.resolved_int8_scheme(), request.int8_calibration
                calibration = _calibration_images(base_card, request, len(images))
                quantize_int8(fp32_path, path, calibration, scheme=scheme, calibration_method=method)
        if engine == "openvino":
            hint = "bf16" if precision == "bf16" else "f32"
            report = compare(reference, openvino_probabilities(path, images, hint), "pytorch fp32")
        elif precision != "fp32":
            report = compare(reference, onnx_probabilities(path, images), "pytorch fp32")
        if precision != "fp32" or engine != "onnxruntime":
            LOGGER.info("parity %s %s %s", engine, precision, report)
            gate(report, *thresholds(request, precision), f"{request.name} ({engine} {precision})")
        if precision == "int8":
            report = replace(report, quantization=int8_recipe(scheme, method, len(calibration)))
        parity = ParityRecord({"onnxruntime_fp32": fp32_report, f"{engine}_{precision}": report})
        card = base_card.replace(
            name=variant_name(request.name, precision), precision=precision, parity=parity, cpu_engine=engine
        )
        candidates.append((precision, card, report, path))
    return candidates


def _with_companion(
    result: ExportResult, companion: GradCamCompanion | None, request: ExportRequest, target: ServingTarget
) -> ExportResult:
    """``result`` after publishing the Grad-CAM companion, when there is one."""
    if companion is None:
        return result
    folder = companion.publish(request.repository, target, request.options, request.keep_versions)
    return replace(result, gradcam_dir=folder)


def _gradcam_companion(
    request: ExportRequest,
    loaded: LoadedCheckpoint,
    card: ModelCard,
    images: np.ndarray,
    reference: np.ndarray,
    work: Path,
) -> GradCamCompanion | None:
    system_asks = request.system is not None and GRADCAM_SYSTEM_OUTPUT in get_system(request.system).outputs
    if not (request.gradcam or system_asks):
        return None
    from radserve.export.gradcam import build_gradcam

    return build_gradcam(loaded.model, card, images, reference, work)


def ood_threshold(
    probabilities: np.ndarray, validation: str, quantile: float = SETTINGS.contract.ood_quantile
) -> OodFlag:
    """The out-of-distribution threshold on the top probability, from the export's validation radiographs.

    A prediction whose top probability is below it is flagged ``ood``: by construction about
    ``quantile`` of radiographs like the validation ones are flagged.
    """
    top = probabilities.max(axis=1)
    threshold = round(float(np.quantile(top, quantile)), 6)
    return OodFlag(threshold, quantile=quantile, samples=int(top.size), validation=validation)


def _calibration_images(card: ModelCard, request: ExportRequest, parity_images: int) -> np.ndarray:
    """Calibration radiographs, disjoint from the parity samples: the folder's radiographs after
    those, or other synthetic ones (another seed)."""
    if request.sample_folder is None and set(card.labels) != set(REGIONS):
        LOGGER.warning(
            "%s: calibrating int8 on synthetic phantoms (no --samples-from): the activation ranges "
            "of this model's real radiographs (anatomy, collimation, implants, noise, detectors) are "
            "not the phantoms', so the quantization may clip them and move probabilities near your "
            "operating threshold by more than the parity gate, measured on the same phantoms, shows; "
            "calibrate and gate on real radiographs with --samples-from DIR",
            request.name,
        )
    try:
        return sample_images(
            card, request.calibration_samples, request.sample_folder, seed=1, skip=parity_images
        )
    except ValueError as error:
        raise ExportError(
            f"{error}: int8 calibration needs radiographs other than the {parity_images} parity samples"
        ) from None
