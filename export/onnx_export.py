"""PyTorch → ONNX: one file, dynamic batch axis, checked opset."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from radserve.export.serving_graph import ServingGraph
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, ModelCard
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

OPSET = SETTINGS.export.opset
MAX_EXPORT_BATCH = 1024


def export_onnx(
    network: torch.nn.Module,
    card: ModelCard,
    path: Path,
    *,
    graph: torch.nn.Module | None = None,
    outputs: tuple[str, ...] = (OUTPUT_NAME,),
) -> onnx.ModelProto:
    """Export ``network`` wrapped in its :class:`ServingGraph` to ``path`` (weights inside the file).

    ``graph`` replaces the serving graph (same wire input) for a companion model with ``outputs``.
    """
    graph = (graph or ServingGraph(network, card)).eval()
    height, width = card.input_size
    example = torch.zeros((2, card.channels, height, width), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamo=True,
            opset_version=OPSET,
            dynamic_shapes={"image": {0: batch}},
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    model = program.model_proto
    model.doc_string = f"radserve {card.name}: {card.architecture}, labels {list(card.labels)}"
    check_onnx(model, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    LOGGER.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return model


def check_onnx(model: onnx.ModelProto, expected_outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Validate the graph and its wire signature."""
    onnx.checker.check_model(model, full_check=True)
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx", 0)) < 17:
        raise ValueError(f"ONNX opset {opsets} is older than 17")
    inputs = [tensor.name for tensor in model.graph.input]
    outputs = [tensor.name for tensor in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(expected_outputs):
        expected = f"{[INPUT_NAME]} -> {list(expected_outputs)}"
        raise ValueError(f"graph signature {inputs} -> {outputs}, expected {expected}")
