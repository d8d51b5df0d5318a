"""Export to the ``embedded-gpu`` target: a radserve checkpoint → gated GPU network → repository.

No ONNX is involved: the version folder holds the network's ``state_dict`` (``weights.pt``), the
model card and ``model.py`` (:mod:`radserve.export.gpu_model`), which rebuilds the torchvision
architecture on the serving GPU. The parity gate runs that same module (fp16 or fp32, padded
batches, CUDA graphs where CUDA is present; on the CPU otherwise) against PyTorch fp32.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from radserve.errors import ExportError
from radserve.export.checkpoint import load_checkpoint
from radserve.export.gpu_model import GraphRunner, build_serving_network
from radserve.export.model_config import ServingOptions
from radserve.export.parity import compare, gate, torch_probabilities
from radserve.export.pipeline import ExportRequest, ExportResult, Variant, thresholds, tool_versions
from radserve.export.precision import variant_name
from radserve.export.repository import publish
from radserve.export.samples import sample_images
from radserve.export.targets import EmbeddedGpuTarget, padded_batch_sizes
from radserve.model_card import ModelCard, ParityRecord, Precision
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

GPU_PRECISIONS: tuple[Precision, ...] = ("fp16", "fp32")


def gpu_serving_options() -> ServingOptions:
    """Serving options of the embedded-gpu target: the GPU's max batch size (docs/how-to/gpu-hosts.md)."""
    return ServingOptions(
        batching=replace(SETTINGS.batching, max_batch_size=SETTINGS.batching.gpu_max_batch_size)
    )


def gpu_probabilities(
    state_dict: dict[str, torch.Tensor],
    card: ModelCard,
    images: np.ndarray,
    sizes: tuple[int, ...],
    device: torch.device,
) -> np.ndarray:
    """Probabilities of the served module (``card.precision``) for ``uint8 [N, 1, H, W]`` images."""
    module = build_serving_network(card.to_dict(), state_dict, device)
    runner = GraphRunner(module, card.input_size, card.num_classes, sizes, device)
    return runner.infer([images])


def export_embedded_gpu(request: ExportRequest) -> ExportResult:
    """Gate each precision of ``request`` and publish it as an embedded-gpu model.

    Raises :class:`ExportError` for a TorchScript/.pt2 source, int8, or a failed gate (nothing is
    published unless every variant passed).
    """
    if request.program is not None:
        raise ExportError(
            "embedded-gpu rebuilds the network from a radserve checkpoint (torchvision architecture + "
            "weights); export a TorchScript or .pt2 model with --target embedded or onnxruntime"
        )
    unsupported = [p for p in request.precisions if p not in GPU_PRECISIONS]
    if unsupported or not request.precisions:
        raise ExportError(f"embedded-gpu publishes fp16 and/or fp32, got {list(request.precisions)}")
    options = request.options or gpu_serving_options()
    sizes = padded_batch_sizes(options.batching.max_batch_size)
    loaded = load_checkpoint(request.checkpoint, request.name)
    images = sample_images(loaded.card, request.samples, request.sample_folder)
    reference = torch_probabilities(loaded.model, loaded.card, images)
    state_dict = {key: value.detach().clone() for key, value in loaded.model.state_dict().items()}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = loaded.card.replace(tool_versions=tool_versions())
    candidates = []
    for precision in request.precisions:
        card = base.replace(name=variant_name(request.name, precision), precision=precision)
        candidate = gpu_probabilities(state_dict, card, images, sizes, device)
        report = compare(reference, candidate, "pytorch fp32")
        LOGGER.info("parity embedded-gpu %s on %s %s", precision, device.type, report)
        min_top1, max_abs = thresholds(request, precision)
        # fp16 network, fp32 softmax: a probability bound holds (docs/how-to/gpu-hosts.md)
        if max_abs is None:
            max_abs = SETTINGS.export.gpu_fp16_max_abs_diff
        gate(report, min_top1, max_abs, f"{card.name} (embedded-gpu {precision} on {device.type})")
        parity = ParityRecord({f"pytorch_{precision}_{device.type}": report})
        candidates.append((precision, card.replace(parity=parity), report))
    published = []
    with tempfile.TemporaryDirectory(prefix="radserve-export-gpu-") as work:
        target = EmbeddedGpuTarget()
        weights = Path(work) / target.model_file
        torch.save(state_dict, weights)
        for precision, card, report in candidates:
            keep = request.keep_versions
            folder = publish(request.repository, card, weights, target, options, keep_versions=keep)
            published.append(Variant(precision, card, report, folder))
    return ExportResult(tuple(published))
