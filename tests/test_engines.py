"""``radserve bench --engines``: every engine answers the served ONNX as ONNX Runtime does, gated."""

from __future__ import annotations

import numpy as np
import pytest

from radserve.loadtests.engines import engines_summary, engines_table, gate, probabilities
from radserve.loadtests.raw import ENGINES


@pytest.fixture(scope="module")
def onnx_and_images(tiny_export):  # type: ignore[no-untyped-def]
    variant = tiny_export.variants[0]
    height, width = variant.card.input_size
    images = list(np.random.default_rng(1).integers(0, 256, (12, 1, 1, height, width), dtype=np.uint8))
    return variant.version_dir / "model.onnx", images


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_passes_the_gate_on_the_served_model(onnx_and_images, engine: str) -> None:  # type: ignore[no-untyped-def]
    onnx_path, images = onnx_and_images
    reference = probabilities(onnx_path, "onnxruntime", images)
    candidate = probabilities(onnx_path, engine, images)
    assert candidate.shape == reference.shape == (12, reference.shape[1])
    np.testing.assert_allclose(candidate.sum(1), 1.0, atol=1e-3)
    assert gate(reference, candidate)["passes_gate"]


def test_gate_fails_a_candidate_that_moves_probabilities() -> None:
    reference = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    moved = np.array([[0.88, 0.12], [0.2, 0.8]], np.float32)  # 0.02 > the 0.01 default
    flipped = np.array([[0.4, 0.6], [0.2, 0.8]], np.float32)
    assert gate(reference, reference)["passes_gate"]
    assert not gate(reference, moved)["passes_gate"]
    result = gate(reference, flipped)
    assert not result["passes_gate"] and result["top1_agreement"] == 0.5


def test_fp32_is_held_to_the_fp32_gate_and_other_precisions_to_the_reduced_one() -> None:
    reference = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    moved = reference + np.array([[-0.005, 0.005], [0.0, 0.0]], np.float32)  # 5e-3: fp32 1e-3, reduced 1e-2
    assert not gate(reference, moved, "fp32")["passes_gate"]
    assert gate(reference, moved, "bf16")["passes_gate"] and gate(reference, moved, "int8")["passes_gate"]


def test_table_marks_failed_gates_and_errors() -> None:
    failed = {"reference": "pytorch fp32", "top1_agreement": 0.97, "max_abs_diff": 0.02, "passes_gate": False}
    data = {
        "architecture": "resnet18", "input_size": [224, 224], "cpu_count": 2, "repeats": 3, "seconds": 3.0,
        "engines": {
            "onnxruntime fp32": {"engine": "onnxruntime", "precision": "fp32", "best_img_per_s": 50.0,
                                 "best_at": "2x1, batch 8", "over_onnxruntime_fp32": 1.0,
                                 "parity": {"reference": "pytorch fp32", "top1_agreement": 1.0,
                                            "max_abs_diff": 0.0, "passes_gate": True}},
            "openvino-bf16 fp32": {"engine": "openvino-bf16", "precision": "bf16", "best_img_per_s": 100.0,
                                   "best_img_per_s_range": [90.0, 104.0], "best_at": "1x2, batch 1",
                                   "over_onnxruntime_fp32": 2.0, "parity": failed},
            "openvino int8": {"error": "RuntimeError: cannot compile"},
        },
    }  # fmt: skip
    table = engines_table(data)
    row = (
        "| openvino-bf16 | bf16 | 100.0 (90.0-104.0) | 1x2, batch 1 | 2.0 | 97.0% / 2.0e-02 vs pytorch fp32 |"
    )
    assert f"{row} FAIL |" in table
    assert "| onnxruntime | fp32 | 50.0 (50.0-50.0) |" in table and "RuntimeError: cannot compile" in table
    summary = engines_summary([data | {"load": "load average 1.00"}]).splitlines()
    assert summary[2].startswith("| resnet18 @ 224 | 50.0 (50.0-50.0) | 1.0x (100.0% / 0.0e+00 pass) | 2.0x")
    assert "97.0% / 2.0e-02 FAIL" in summary[2] and "error: RuntimeError" in summary[2]
    assert "| openvino bf16 |" in summary[0]  # the bf16 hint's column, by its precision
    assert summary[2].endswith("| onnxruntime fp32 | load average 1.00 |")  # bf16 is faster but fails
