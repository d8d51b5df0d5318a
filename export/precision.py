"""Reduced-precision variants of the FP32 serving graph, as ONNX (design decision 3).

Both keep the two ends of the graph exact, in float32: the uint8 → float normalisation before the
first convolution (:func:`_preamble`) and the temperature-scaled softmax after the logits
(:func:`_tail`), so that probabilities are not rounded to float16 or to 1/256 steps next to a
calibrated operating threshold.

* ``fp16``: the network between the normalised image and the logits is converted to float16
  (onnxruntime's converter on that subgraph alone, float32 at its edges) and spliced back between
  the float32 ends: one cast in, one cast out.
* ``int8``: static Q/DQ quantization with symmetric int8 weights (per channel), calibrated on
  radiographs preprocessed exactly as the client does; both ends are left in float32 with their
  weighted layers: the normalisation and the first convolution, the last layer (the classifier
  producing the logits) and the softmax. One of two schemes (:data:`INT8_SCHEMES`):
  ``s8s8`` (symmetric int8 activations) is what TensorRT's explicit quantization accepts; ``u8s8``
  (asymmetric uint8 activations) is what ONNX Runtime's x86 CPU kernels run fast. Measured here
  (resnet18 @ 224, 2 threads, loadtests/precision_bench.py): u8s8 is about 3x FP32, while s8s8 is no
  faster than FP32: ONNX Runtime fuses only 9 of its 20 convolutions into QLinearConv (the rest run
  in float between Q/DQ pairs), and with ``session.qdqisint8allowed=1`` it fuses all but its s8s8
  CPU kernels run at a fifth of FP32's speed. Export picks ``s8s8`` for TensorRT (the ``tensorrt``
  target and ``--trt-accelerator``) and ``u8s8`` for the CPU targets; ``u8s8`` quantizes weights to
  7 bits (ORT's ``reduce_range``), which with the float first convolution and 128 calibration
  radiographs is what brings the demo ResNet-18 under the default gate (docs/how-to/export.md, "INT8").

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

from radserve.errors import ExportError
from radserve.export.onnx_export import check_onnx
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, Precision

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
# operators that end the float32 preamble and start the float32 tail
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
_MAX_END_NODES = 16  # a longer preamble or tail is not the serving graph's: leave the graph as it is
CALIBRATION_BATCH = 8
# int8 scheme -> (activation type, symmetric activations, 7-bit weights); weights are always symmetric
INT8_SCHEMES: dict[str, tuple[str, bool, bool]] = {
    "s8s8": ("QInt8", True, False),
    "u8s8": ("QUInt8", False, True),
}
# int8 calibration -> (onnxruntime CalibrationMethod, its extra options): the activation ranges from
# the calibration images' extremes, their per-batch extremes averaged, a histogram's 99.999th
# percentile, or the histogram's minimum-entropy threshold
INT8_CALIBRATIONS: dict[str, tuple[str, dict[str, object]]] = {
    "minmax": ("MinMax", {}),
    "minmax-average": ("MinMax", {"CalibMovingAverage": True}),
    "percentile": ("Percentile", {"CalibPercentile": 99.999}),
    "entropy": ("Entropy", {}),
}
INT8_CALIBRATION = "minmax"  # what export publishes; docs/how-to/export.md, "INT8": the others measured


def variant_name(name: str, precision: Precision) -> str:
    """Repository name of a precision variant: ``NAME`` for fp32, ``NAME_fp16``, ``NAME_int8``."""
    return name if precision == "fp32" else f"{name}_{precision}"


def convert_fp16(source: Path, destination: Path) -> onnx.ModelProto:
    """Mixed-precision copy of ``source``: float16 between the float32 normalisation and softmax."""
    from onnx.utils import Extractor
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    preamble, tail = _preamble(model), _tail(model, include_weighted=False)
    if not preamble or not tail:
        raise ExportError(f"{source}: no normalisation before the first convolution or no softmax tail")
    body_input = _edge(preamble, model, forward=True)
    body_output = _edge(tail, model, forward=False)
    body = Extractor(onnx.shape_inference.infer_shapes(model)).extract_model([body_input], [body_output])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        body = convert_float_to_float16(body, keep_io_types=True, disable_shape_infer=False)
    converted = _splice(model, body)
    check_onnx(converted)
    onnx.save_model(converted, str(destination), save_as_external_data=False)
    return converted


def _splice(model: onnx.ModelProto, body: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the nodes ``body`` replaces swapped for ``body``'s (same edge tensor names)."""
    replaced = {output for node in body.graph.node for output in node.output}
    outer = [node for node in model.graph.node if not replaced.intersection(node.output)]
    used = {name for node in outer for name in node.input}
    initializers = {tensor.name: tensor for tensor in model.graph.initializer if tensor.name in used}
    for tensor in body.graph.initializer:
        kept = initializers.get(tensor.name)
        if kept is not None and kept.data_type != tensor.data_type:
            raise ExportError(f"initializer {tensor.name} is used in float32 and in float16")
        initializers[tensor.name] = tensor
    graph = onnx.helper.make_graph(
        [*outer, *body.graph.node],
        model.graph.name,
        model.graph.input,
        model.graph.output,
        list(initializers.values()),
    )
    _sort_topologically(graph)
    spliced = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    spliced.metadata_props.extend(model.metadata_props)
    return spliced


def quantize_int8(
    source: Path,
    destination: Path,
    calibration: np.ndarray,
    *,
    scheme: str = "s8s8",
    quant_format: str = "QDQ",
    per_channel: bool = True,
    reduce_range: bool | None = None,
    calibration_method: str = INT8_CALIBRATION,
) -> onnx.ModelProto:
    """Static int8 copy of ``source``, calibrated on ``uint8 [N, 1, H, W]`` wire images.

    ``scheme`` is a key of :data:`INT8_SCHEMES` (``reduce_range`` None: the scheme's 7-bit weights
    or not), ``calibration_method`` one of :data:`INT8_CALIBRATIONS`; Q/DQ with per-channel weights
    and :data:`INT8_CALIBRATION` is what radserve publishes, the other settings exist for
    ``loadtests/precision_bench.py --int8-alternatives``.
    """
    if scheme not in INT8_SCHEMES:
        raise ExportError(f"int8 scheme must be one of {sorted(INT8_SCHEMES)}, got {scheme!r}")
    if calibration_method not in INT8_CALIBRATIONS:
        raise ExportError(
            f"int8 calibration must be one of {sorted(INT8_CALIBRATIONS)}: {calibration_method!r}"
        )
    activation_type, symmetric_activations, seven_bit_weights = INT8_SCHEMES[scheme]
    method, calibration_options = INT8_CALIBRATIONS[calibration_method]
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("int8 quantization needs calibration images")

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
        float_ends = (*_preamble(model, include_weighted=True), *_tail(model, include_weighted=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(destination),
                _Reader(),
                quant_format=QuantFormat[quant_format],
                per_channel=per_channel,
                reduce_range=seven_bit_weights if reduce_range is None else reduce_range,
                activation_type=QuantType[activation_type],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=[node.name for node in float_ends],
                calibrate_method=CalibrationMethod[method],
                extra_options={
                    "ActivationSymmetric": symmetric_activations,
                    "WeightSymmetric": True,
                    **calibration_options,
                },
            )
    quantized = onnx.load(str(destination))
    check_onnx(quantized)
    return quantized


def int8_recipe(scheme: str, calibration_method: str, calibration_samples: int) -> str:
    """How :func:`quantize_int8` quantized with these settings, for the model card."""
    weights = "7-bit" if INT8_SCHEMES[scheme][2] else "8-bit"
    return (
        f"QDQ {scheme}, per-channel {weights} weights, first and last weighted layers float32, "
        f"{calibration_method} calibration on {calibration_samples} radiographs"
    )


def _preamble(model: onnx.ModelProto, include_weighted: bool = False) -> list[onnx.NodeProto]:
    """The nodes between the graph input and the first weighted operator (cast, expand, normalise),
    and that operator if asked."""
    return _end_nodes(model, forward=True, include_weighted=include_weighted)


def _tail(model: onnx.ModelProto, include_weighted: bool) -> list[onnx.NodeProto]:
    """The nodes after the last weighted operator (temperature, softmax), and that operator if asked."""
    return _end_nodes(model, forward=False, include_weighted=include_weighted)


def _end_nodes(model: onnx.ModelProto, forward: bool, include_weighted: bool) -> list[onnx.NodeProto]:
    """Nodes reached from the graph input (``forward``) or back from its output, up to the weighted
    operators met; [] when that region is longer than a preamble or tail."""
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes: list[onnx.NodeProto] = []
    seen: set[int] = set()
    frontier = [INPUT_NAME if forward else OUTPUT_NAME]
    while frontier:
        tensor = frontier.pop()
        reached = consumers.get(tensor, []) if forward else [producers[tensor]] if tensor in producers else []
        for node in reached:
            if id(node) in seen:
                continue
            seen.add(id(node))
            weighted = node.op_type in WEIGHTED_OPS
            if weighted and not include_weighted:
                continue
            nodes.append(node)
            if not weighted:
                frontier.extend(node.output if forward else node.input)
        if len(nodes) > _MAX_END_NODES:
            return []
    return nodes


def _edge(nodes: list[onnx.NodeProto], model: onnx.ModelProto, forward: bool) -> str:
    """The one tensor crossing between ``nodes`` (the preamble or tail) and the rest of ``model``."""
    inside = {id(node) for node in nodes}
    produced = {output for node in nodes for output in node.output}
    consumed = {name for node in nodes for name in node.input}
    rest = [node for node in model.graph.node if id(node) not in inside]
    if forward:
        edges = {name for node in rest for name in node.input if name in produced}
    else:
        edges = {output for node in rest for output in node.output if output in consumed}
    if len(edges) != 1:
        raise ExportError(f"expected one tensor between the graph's end and its body, found {sorted(edges)}")
    return edges.pop()


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
            raise ExportError(f"graph has a cycle or a dangling input at {remaining[0].name}")
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
