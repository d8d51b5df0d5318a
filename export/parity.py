"""Parity gate: the exported graph must answer as the PyTorch model does before it is published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch

from radserve.errors import ExportError
from radserve.export.serving_graph import ServingGraph
from radserve.model_card import INPUT_NAME, ModelCard, ParityReport

_BATCH = 8


def compare(reference: np.ndarray, candidate: np.ndarray, reference_name: str) -> ParityReport:
    """Compare two ``[N, C]`` probability arrays."""
    agrees = reference.argmax(axis=1) == candidate.argmax(axis=1)
    agreement = float(np.mean(agrees))
    ranked = np.sort(reference[~agrees], axis=1)
    margins = tuple(round(float(m), 6) for m in ranked[:, -1] - ranked[:, -2]) if ranked.shape[1] > 1 else ()
    difference = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    relative = difference / np.maximum(np.abs(reference), 1e-3)
    return ParityReport(
        reference=reference_name,
        samples=len(reference),
        top1_agreement=agreement,
        max_abs_diff=float(difference.max(initial=0.0)),
        max_rel_diff=float(relative.max(initial=0.0)),
        disagreement_margins=margins,
    )


def torch_probabilities(network: torch.nn.Module, card: ModelCard, images: np.ndarray) -> np.ndarray:
    """Probabilities of the PyTorch model for ``uint8 [N, 1, H, W]`` wire images."""
    graph = ServingGraph(network, card).eval()
    with torch.inference_mode():
        parts = [
            graph(torch.from_numpy(images[i : i + _BATCH])).numpy() for i in range(0, len(images), _BATCH)
        ]
    return np.concatenate(parts)


def onnx_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Probabilities of an ONNX graph under ONNX Runtime on the CPU."""
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    parts = [
        session.run(None, {INPUT_NAME: images[i : i + _BATCH]})[0] for i in range(0, len(images), _BATCH)
    ]
    return np.concatenate(parts)


def openvino_probabilities(model_path: Path, images: np.ndarray, inference_precision: str) -> np.ndarray:
    """Probabilities of an ONNX graph under OpenVINO's CPU plugin at ``inference_precision`` (f32, bf16).

    Raises :class:`ExportError` when OpenVINO is missing or the CPU lacks the precision (OpenVINO would
    fall back to f32 without saying so, and the variant would be a mislabelled fp32).
    """
    try:
        import openvino
    except ImportError as error:
        raise ExportError(f"the openvino CPU engine needs OpenVINO (pip install openvino): {error}") from None
    core = openvino.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if inference_precision == "bf16" and "BF16" not in capabilities:
        raise ExportError(
            f"this CPU has no bf16 ({', '.join(capabilities)}): a bf16 variant needs AVX512-BF16 or AMX"
        )
    compiled = core.compile_model(
        str(model_path), "CPU", {"INFERENCE_PRECISION_HINT": inference_precision, "NUM_STREAMS": 1}
    )
    request = compiled.create_infer_request()
    output = compiled.output(0)
    parts = [
        np.asarray(request.infer({INPUT_NAME: images[i : i + _BATCH]})[output])
        for i in range(0, len(images), _BATCH)
    ]
    return np.concatenate(parts)


def gate(report: ParityReport, min_top1: float, max_abs_diff: float | None, what: str) -> None:
    """Refuse publication (:class:`ExportError`) when ``report`` is below the thresholds."""
    if report.top1_agreement < min_top1:
        raise ExportError(
            f"{what}: top-1 agreement with {report.reference} is {report.top1_agreement:.2%} on "
            f"{report.samples} samples, below the required {min_top1:.2%}; not published"
        )
    if max_abs_diff is not None and report.max_abs_diff > max_abs_diff:
        raise ExportError(
            f"{what}: max abs probability difference with {report.reference} is "
            f"{report.max_abs_diff:.3g}, above the allowed {max_abs_diff:.3g}; not published"
        )
