"""Reduced-precision variants of the FP32 serving graph, as ONNX (design decision 3).

* ``fp16``: mixed precision with the graph's inputs/outputs kept (UINT8 in, float32 out); the softmax
  stays in float32 (``FP32_OPS``), the rest runs in float16. The normalization runs in float16 too:
  ``(x - 255 * mean) / (255 * std)`` of integer pixels 0..255 loses < 1e-3 relative, measured as no
  loss of agreement (keeping it in float32 with the converter's node block list breaks its type
  inference on these graphs).
* ``int8``: static Q/DQ quantization with symmetric int8 weights (per channel), calibrated on
  radiographs preprocessed exactly as the client does, in one of two schemes (:data:`INT8_SCHEMES`):
  ``s8s8`` (symmetric int8 activations) is what TensorRT's explicit quantization accepts; ``u8s8``
  (asymmetric uint8 activations) is what ONNX Runtime's x86 CPU kernels run fast. Measured here
  (resnet18 @ 224, 2 threads, loadtests/precision_bench.py): u8s8 is about 3x FP32, while s8s8 is no
  faster than FP32: ONNX Runtime fuses only 9 of its 20 convolutions into QLinearConv (the rest run
  in float between Q/DQ pairs), and with ``session.qdqisint8allowed=1`` it fuses all but its s8s8
  CPU kernels run at a fifth of FP32's speed. Export picks ``s8s8`` for TensorRT (the ``tensorrt``
  target and ``--trt-accelerator``) and ``u8s8`` for the CPU targets.

Both keep the graph's signature: ``image`` UINT8 ``[B, 1, H, W]`` → ``probabilities`` FP32 ``[B, C]``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import onnx

from radserve.export.onnx_export import check_onnx
from radserve.model_card import INPUT_NAME, Precision

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
# Kept in float32 in the fp16 variant: the softmax of the output (its sum must stay 1).
FP32_OPS = ("Softmax",)
CALIBRATION_BATCH = 8
# int8 scheme -> (activation type, symmetric activations); weights are always symmetric int8
INT8_SCHEMES: dict[str, tuple[str, bool]] = {"s8s8": ("QInt8", True), "u8s8": ("QUInt8", False)}


def variant_name(name: str, precision: Precision) -> str:
    """Repository name of a precision variant: ``NAME`` for fp32, ``NAME_fp16``, ``NAME_int8``."""
    return name if precision == "fp32" else f"{name}_{precision}"


def convert_fp16(source: Path, destination: Path) -> onnx.ModelProto:
    """Mixed-precision copy of ``source``: float16 inside, the graph's inputs and outputs unchanged."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=list(FP32_OPS),
            disable_shape_infer=False,
        )
    _sort_topologically(converted.graph)  # the converter appends the casts it adds at the end
    check_onnx(converted)
    onnx.save_model(converted, str(destination), save_as_external_data=False)
    return converted


def quantize_int8(
    source: Path,
    destination: Path,
    calibration: np.ndarray,
    *,
    scheme: str = "s8s8",
    quant_format: str = "QDQ",
    per_channel: bool = True,
    reduce_range: bool = False,
) -> onnx.ModelProto:
    """Static int8 copy of ``source``, calibrated on ``uint8 [N, 1, H, W]`` wire images.

    ``scheme`` is a key of :data:`INT8_SCHEMES`; Q/DQ with per-channel weights is what radserve
    publishes, the other settings exist for ``loadtests/precision_bench.py --int8-alternatives``.
    """
    if scheme not in INT8_SCHEMES:
        raise ValueError(f"int8 scheme must be one of {sorted(INT8_SCHEMES)}, got {scheme!r}")
    activation_type, symmetric_activations = INT8_SCHEMES[scheme]
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 quantization needs calibration images")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict[str, np.ndarray]] = iter(
                {INPUT_NAME: calibration[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    with tempfile.TemporaryDirectory(prefix="radserve-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        # shape inference + constant folding, so every Conv/Gemm is seen with its weights
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(destination),
                _Reader(),
                quant_format=QuantFormat[quant_format],
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType[activation_type],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_normalization_nodes(model),
                extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True},
            )
    quantized = onnx.load(str(destination))
    check_onnx(quantized)
    return quantized


def _normalization_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the graph input and the first Conv (cast, expand, normalize)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names: list[str] = []
    frontier = [INPUT_NAME]
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type in ("Conv", "Gemm", "MatMul") or node.name in seen:
                continue
            seen.add(node.name)
            names.append(node.name)
            frontier.extend(node.output)
        if len(names) > 16:  # not a short preamble: leave the graph as it is
            return []
    return names


def _sort_topologically(graph: onnx.GraphProto) -> None:
    available = {tensor.name for tensor in graph.input} | {tensor.name for tensor in graph.initializer}
    available.add("")
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input at {remaining[0].name}")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


def describe(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of the node types that show a graph's precision (for logs and tests)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Conv", "Softmax"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    initializers = [tensor.data_type for tensor in model.graph.initializer]
    counts["float16_initializers"] = initializers.count(onnx.TensorProto.FLOAT16)
    counts["int8_initializers"] = initializers.count(onnx.TensorProto.INT8)
    return counts
