"""The CPU engines of every architecture radserve serves, at its input size, fp32, bf16 and INT8.

    python -m radserve.loadtests.engine_sweep [--only spine-view ...] [--out docs/bench/engines]

For each model of :data:`MODELS` (the five systems' study architectures at their study sizes, the
fracture system's other architecture, and the bench models at 224), a random-init checkpoint
(:mod:`.random_checkpoint`: speed does not depend on the weights; its batch norm statistics and
head calibrated on wire images, so that its answers depend on the input) is exported by export's own
functions: the fp32 ONNX, and the INT8 Q/DQ ONNX of export's quantize path (the embedded target's
scheme and calibration). Each engine of :data:`~radserve.loadtests.raw.ENGINES` runs each file raw
(:func:`~radserve.loadtests.engines.compare_engines`: every layout, interleaved with the others), gated
against PyTorch fp32 on the same wire images with export's gate for the precision. One JSON per model
(``ARCH-SIZE.json``), with the machine's load average before and after: ratios within a file
compare like with like, absolute figures move with the neighbours' load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from radserve.loadtests.engines import compare_engines

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepModel:
    """One architecture at one input size: a system's (its contract, labels, channels) or a bench model."""

    name: str
    architecture: str
    size: int
    system: str = ""
    images: int = 32  # parity samples, also the measured wire images
    batches: tuple[int, ...] = (1, 8)
    seconds: float = 2.0
    # export's INT8 calibration of EfficientNet-B6 at 528 px was killed for memory here (24 GiB shared)
    int8: bool = True

    @property
    def file_name(self) -> str:
        return f"{self.architecture}-{self.size}.json"


MODELS = (  # cheapest first
    SweepModel("mobilenet_v3_small", "mobilenet_v3_small", 224),
    SweepModel("efficientnet_b0", "efficientnet_b0", 224),
    SweepModel("body-region", "resnet18", 224, "body-region"),
    SweepModel("fracture", "mobilenet_v3_small", 384, "fracture", 16),
    SweepModel("fracture-efficientnet_b0", "efficientnet_b0", 384, images=16),
    SweepModel("vertebral-fracture-mri", "resnet50", 224, "vertebral-fracture-mri", 16),
    SweepModel("spondylolisthesis", "efficientnet_v2_m", 480, "spondylolisthesis", 8, (1, 4), 3.0),
    SweepModel("spine-view", "efficientnet_b6", 528, "spine-view", images=8, batches=(1,), int8=False),
)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (``uptime``): other work on the same cores."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _variants(model: SweepModel, work: Path) -> tuple[dict[str, Path], np.ndarray, np.ndarray, Any]:
    """The fp32 and INT8 files, the wire images, PyTorch fp32's probabilities on them, and the card."""
    from radserve.export.onnx_export import export_onnx
    from radserve.export.parity import torch_probabilities
    from radserve.export.precision import INT8_CALIBRATION, quantize_int8
    from radserve.export.samples import sample_images
    from radserve.export.sources import load_source
    from radserve.export.targets import get_target
    from radserve.loadtests.random_checkpoint import (
        calibrate_random_network,
        write_random_checkpoint,
        write_system_checkpoint,
    )
    from radserve.systems import get_system

    checkpoint = work / "random.pt"
    if model.system:
        write_system_checkpoint(model.system, checkpoint)
    else:
        write_random_checkpoint(model.architecture, checkpoint, input_size=(model.size, model.size))
    loaded = load_source(checkpoint, model.name)
    card = loaded.card
    if model.system:
        card = get_system(model.system).apply(card, loaded.network_channels)
    calibrate_random_network(loaded.model, card, sample_images(card, 16, seed=2))
    images = sample_images(card, model.images)
    reference = torch_probabilities(loaded.model, card, images)
    variants = {"fp32": work / "fp32.onnx"}
    export_onnx(loaded.model, card, variants["fp32"])
    if not model.int8:
        return variants, images, reference, card
    variants["int8"] = work / "int8.onnx"
    calibration = sample_images(card, model.images, seed=1, skip=model.images)
    scheme = get_target("embedded").int8_scheme(None)
    quantize_int8(
        variants["fp32"], variants["int8"], calibration, scheme=scheme, calibration_method=INT8_CALIBRATION
    )
    return variants, images, reference, card


def sweep(model: SweepModel, repeats: int) -> dict[str, Any]:
    """One model's ``engines`` comparison (:func:`compare_engines`) against PyTorch fp32, as JSON."""
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="radserve-engines-") as work:
        variants, images, reference, card = _variants(model, Path(work))
        wire = [np.ascontiguousarray(image[np.newaxis]) for image in images]
        engines = compare_engines(
            variants, wire, model.seconds, model.batches, repeats, reference=("pytorch fp32", reference)
        )
    return {
        "model": model.name,
        "system": model.system,
        "architecture": model.architecture,
        "input_size": list(card.input_size),
        "channels": card.channels,
        "weights": "random init (loadtests/random_checkpoint.py): speed only; parity against PyTorch fp32",
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "versions": {package: metadata.version(package) for package in ("onnxruntime", "openvino", "torch")},
        "repeats": repeats,
        "seconds": model.seconds,
        "batches": list(model.batches),
        "load": f"load average {load_before} before, {load_average()} after (shared cores)",
        "engines": engines,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help=f"models by name ({', '.join(m.name for m in MODELS)})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point (median and range)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/engines"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("radserve.loadtests").setLevel(logging.INFO)
    chosen = [m for m in MODELS if not args.only or m.name in args.only]
    unknown = sorted(set(args.only or ()) - {m.name for m in MODELS})
    if unknown:
        parser.error(f"unknown models {unknown}")
    args.out.mkdir(parents=True, exist_ok=True)
    for model in chosen:
        data = sweep(model, args.repeats)
        path = args.out / model.file_name
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
