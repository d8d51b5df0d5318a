"""FP16 and INT8 variants: structure, agreement gates, and served side by side by the real tritonserver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from radserve.client.grpc_client import AsyncRadiographClient
from radserve.errors import ExportError
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.precision import describe
from radserve.export.repo_check import check_repository
from radserve.export.samples import sample_images
from radserve.model_card import ModelCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.settings import SETTINGS
from tests._reference import onnx_reference

NAME = "variants"


GATE = 0.05  # max abs probability difference allowed in the variants fixture


@pytest.fixture(scope="module")
def variants(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult]:
    repository = tmp_path_factory.mktemp("variants")
    request = ExportRequest(
        tiny_checkpoint,
        NAME,
        repository,
        samples=32,
        precisions=("fp32", "fp16", "int8", "bf16"),
        calibration_samples=32,
        # The tiny model is weakly trained (near-tied probabilities): int8 moves them by ~0.03 and may
        # flip a tie, above the product's default gates (top-1 99 %, max abs 0.01), which this fixture
        # does not test (test_int8_gate_refuses_and_publishes_nothing does): it tests publication.
        min_top1_agreement=0.9,
        max_abs_diff=GATE,
    )
    return repository, export_checkpoint(request)


def test_variants_are_published_side_by_side(variants: tuple[Path, ExportResult]) -> None:
    repository, result = variants
    names = [variant.card.name for variant in result.variants]
    assert names == [NAME, f"{NAME}_fp16", f"{NAME}_int8", f"{NAME}_bf16"]
    for variant in result.variants:
        card = ModelCard.read(variant.version_dir)
        assert card.precision == variant.precision
        assert card.cpu_engine == ("openvino" if variant.precision == "bf16" else "onnxruntime")
        assert card.parity.runtimes["onnxruntime_fp32"].top1_agreement == 1.0
        figures = card.parity.runtimes[f"{card.cpu_engine}_{variant.precision}"]
        assert figures.top1_agreement >= (1.0 if variant.precision == "fp32" else 0.9)
        assert figures.max_abs_diff <= GATE
        assert figures.samples == 32
        assert (figures.quantization != "") == (variant.precision == "int8")
        assert card.tool_versions["onnxruntime"]
    report = check_repository(repository)
    assert report.ok, report.render()


def test_variant_graphs_keep_the_wire_signature(variants: tuple[Path, ExportResult]) -> None:
    _, result = variants
    counts = {}
    for variant in result.variants:
        model = onnx.load(str(variant.version_dir / "model.onnx"))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        counts[variant.precision] = describe(model)
    assert counts["fp32"]["float16_initializers"] == 0 and "QuantizeLinear" not in counts["fp32"]
    assert counts["fp16"]["float16_initializers"] > 0
    assert counts["int8"]["QuantizeLinear"] > 0 and counts["int8"]["int8_initializers"] > 0
    assert counts["bf16"] == counts["fp32"]  # the fp32 graph; OpenVINO rounds at bf16 when it runs it


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def test_reduced_graphs_keep_normalisation_and_softmax_in_float32(
    variants: tuple[Path, ExportResult],
) -> None:
    _, result = variants
    for variant in result.variants[1:]:
        if variant.precision == "bf16":  # the fp32 graph, run by OpenVINO at bf16: nothing converted
            continue
        model = onnx.load(str(variant.version_dir / "model.onnx"))
        producers = _producers(model)
        initializers = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
        softmax = producers["probabilities"]
        assert softmax.op_type == "Softmax", variant.precision  # nothing rounds the probabilities after it
        logits = producers[softmax.input[0]]
        # fp16: one cast of the float16 logits to float32; int8: the classifier in float, no Q/DQ pair
        assert logits.op_type == {"fp16": "Cast", "int8": "Gemm"}[variant.precision]
        cast = next(node for node in model.graph.node if node.input[0] == "image")
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
        normalisation = [node for node in model.graph.node if node.op_type in ("Sub", "Mul")][:2]
        for node in normalisation:
            constants = [name for name in node.input if name in initializers]
            assert constants and all(initializers[name] == onnx.TensorProto.FLOAT for name in constants)


def test_int8_keeps_the_first_convolution_float_and_u8s8_weights_at_7_bits(
    variants: tuple[Path, ExportResult],
) -> None:
    # the recipe that brings the demo ResNet-18 under the default gate (docs/how-to/export.md, "INT8")
    _, result = variants
    (variant,) = [variant for variant in result.variants if variant.precision == "int8"]
    model = onnx.load(str(variant.version_dir / "model.onnx"))
    producers = _producers(model)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
    first = convolutions[0]
    assert initializers[first.input[1]].data_type == onnx.TensorProto.FLOAT  # no DequantizeLinear
    assert first.input[0] not in producers or producers[first.input[0]].op_type != "DequantizeLinear"
    quantized = [producers[node.input[1]] for node in convolutions[1:]]
    assert quantized and all(node.op_type == "DequantizeLinear" for node in quantized)
    weights = np.concatenate(
        [numpy_helper.to_array(initializers[node.input[0]]).ravel() for node in quantized]
    )
    assert weights.dtype == np.int8
    assert np.abs(weights.astype(np.int16)).max() == 64  # 7 bits (reduce_range): channel extremes at ±64
    assert "7-bit weights" in variant.card.parity.runtimes["onnxruntime_int8"].quantization


def test_calibration_is_disjoint_from_parity_and_phantoms_warn_for_a_real_model(
    tiny_export: ExportResult, dicom_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from radserve.export.pipeline import _calibration_images

    card = tiny_export.card
    request = ExportRequest(Path("x.pt"), "x", Path("."), sample_folder=dicom_folder, calibration_samples=4)
    parity = sample_images(card, 6, dicom_folder)
    calibration = _calibration_images(card, request, len(parity))
    assert len(calibration) == 4
    assert not any(np.array_equal(a, b) for a in parity for b in calibration)
    assert "phantoms" not in caplog.text
    real = card.replace(labels=("normal", "pneumothorax"))
    synthetic = _calibration_images(
        real, ExportRequest(Path("x.pt"), "x", Path("."), calibration_samples=2), 6
    )
    assert len(synthetic) == 2
    assert "calibrating int8 on synthetic phantoms" in caplog.text and "--samples-from" in caplog.text


def test_int8_of_the_tiny_checkpoint_passes_the_default_gates(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # the product's own thresholds and sample counts: a regression of the int8 recipe (a quantized
    # softmax, per-tensor weights, calibration on the parity samples) shows here first
    result = export_checkpoint(ExportRequest(tiny_checkpoint, "gated", tmp_path, precisions=("int8",)))
    (variant,) = result.variants
    assert variant.parity.samples == SETTINGS.export.parity_samples
    assert variant.parity.top1_agreement >= SETTINGS.export.reduced_min_top1
    assert variant.parity.max_abs_diff <= SETTINGS.export.reduced_max_abs_diff
    assert variant.card.parity.runtimes["onnxruntime_int8"].max_abs_diff == variant.parity.max_abs_diff


def test_int8_gate_refuses_and_publishes_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    request = ExportRequest(
        tiny_checkpoint,
        "strict",
        tmp_path,
        samples=8,
        precisions=("fp32", "int8"),
        calibration_samples=8,
        max_abs_diff=1e-4,  # fp32 meets it (~1e-7); int8 cannot (~1e-2)
        min_top1_agreement=0.0,  # so that the max-abs gate is the one that refuses
    )
    with pytest.raises(ExportError, match=r"strict \(onnxruntime int8\): max abs"):
        export_checkpoint(request)
    assert not (tmp_path / "strict").exists()  # the fp32 variant was not published either


def test_embedded_server_serves_the_variants_and_they_agree(
    variants: tuple[Path, ExportResult], tmp_path: Path
) -> None:
    repository, result = variants
    images = sample_images(result.card, 12, seed=5)

    async def classify_all(url: str) -> dict[str, np.ndarray]:
        answers = {}
        async with AsyncRadiographClient(url, max_in_flight=4) as client:
            for variant in result.variants:
                await client.wait_ready(variant.card.name, timeout=60)
                assert (await client.model_card(variant.card.name)).precision == variant.precision
                predictions = await asyncio.gather(
                    *(client.infer(variant.card.name, images[i : i + 1]) for i in range(len(images)))
                )
                answers[variant.precision] = np.concatenate([p.probabilities for p in predictions])
        return answers

    with TritonServer(repository, ports=free_ports(), log_file=tmp_path / "triton.log") as server:
        answers = asyncio.run(classify_all(server.grpc_url))
    for variant in result.variants:  # served equals the same model file run in this process
        if variant.precision in ("fp32", "int8"):
            in_process = onnx_reference(variant.version_dir / "model.onnx", images)
            np.testing.assert_allclose(answers[variant.precision], in_process, rtol=0, atol=1e-6)
            assert (answers[variant.precision].argmax(1) == in_process.argmax(1)).all(), variant.precision
    reference = answers["fp32"]
    np.testing.assert_allclose(reference.sum(axis=1), 1.0, rtol=1e-5)
    for precision in ("fp16", "int8", "bf16"):
        agreement = np.mean(answers[precision].argmax(1) == reference.argmax(1))
        assert agreement >= 11 / 12, precision
        assert np.abs(answers[precision] - reference).max() < 0.1, precision
