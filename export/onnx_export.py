"""PyTorch → ONNX: one file, dynamic batch axis, checked opset."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch

from radserve.errors import ExportError
from radserve.export.serving_graph import ServingGraph
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, ModelCard
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

OPSET = SETTINGS.export.opset
OPSET_VARIABLE = "RADSERVE_EXPORT_OPSET"
MIN_OPSET = 17
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

    Raises:
        ExportError: the exporter failed, could not write the opset of ``RADSERVE_EXPORT_OPSET``, the
            graph fails :func:`check_onnx`, or the file cannot be written.
    """
    if OPSET < MIN_OPSET:
        raise ExportError(f"{OPSET_VARIABLE}={OPSET}: radserve writes ONNX opset {MIN_OPSET} or newer")
    graph = (graph or ServingGraph(network, card)).eval()
    height, width = card.input_size
    example = torch.zeros((2, card.channels, height, width), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    # torch's exporter raises many types (torch.export, onnxscript, onnx): each becomes one ExportError.
    with warnings.catch_warnings(), torch.no_grad(), _exporter_errors(card.name):
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
        raise ExportError(f"{card.name}: torch.onnx.export returned no program")
    model = program.model_proto
    # The dynamo exporter writes its own opset (18) when it cannot convert to the one asked for,
    # logging onnxscript's traceback: a setting that was not honoured is an error, not a warning.
    written = default_opset(model)
    if written != OPSET:
        raise ExportError(
            f"{card.name}: {OPSET_VARIABLE}={OPSET} could not be honoured "
            f"(torch.onnx.export wrote opset {written})"
        )
    model.doc_string = f"radserve {card.name}: {card.architecture}, labels {list(card.labels)}"
    check_onnx(model, outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        onnx.save_model(model, str(path), save_as_external_data=False)
    except OSError as error:
        raise ExportError(f"{path}: cannot write the ONNX file ({error.strerror or error})") from error
    LOGGER.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return model


@contextlib.contextmanager
def _exporter_errors(name: str) -> Iterator[None]:
    try:
        yield
    except ExportError:
        raise
    except Exception as error:  # torch.export, onnxscript and onnx raise many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{name}: torch.onnx.export failed: {first}") from error


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default (``ai.onnx``) domain; 0 when it imports none."""
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    return opsets.get("", opsets.get("ai.onnx", 0))


def check_onnx(model: onnx.ModelProto, expected_outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    """Validate the graph and its wire signature.

    Raises:
        ExportError: onnx's checker refuses the graph, its opset is older than 17, or its input and
            outputs are not the wire signature.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"ONNX checker: {str(error).strip().splitlines()[0]}") from error
    if default_opset(model) < MIN_OPSET:
        raise ExportError(f"ONNX opset {default_opset(model)} is older than {MIN_OPSET}")
    inputs = [tensor.name for tensor in model.graph.input]
    outputs = [tensor.name for tensor in model.graph.output]
    if inputs != [INPUT_NAME] or outputs != list(expected_outputs):
        expected = f"{[INPUT_NAME]} -> {list(expected_outputs)}"
        raise ExportError(f"graph signature {inputs} -> {outputs}, expected {expected}")
