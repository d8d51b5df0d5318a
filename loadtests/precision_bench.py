"""ONNX Runtime throughput of the FP32, FP16 and INT8 variants of one model on this CPU.

    python -m radserve.loadtests.precision_bench [--checkpoint build/demo-resnet18.pt] [--threads 2]
        [--batches 1 8 32] [--seconds 3] [--json build/precision-bench.json] [--int8-alternatives]

The variants are made by export's own functions (export_onnx, convert_fp16, quantize_int8) from a
radserve checkpoint (default: the demo checkpoint if present, else a random-init ResNet-18 at 224,
whose agreement figures then mean little). Each is timed with ``--threads`` intra-op threads at each
batch size (img/s, best of the batch sizes reported) and compared with FP32 ONNX Runtime on sample
radiographs preprocessed as the client does. Both int8 schemes are timed: u8s8 (what the CPU targets
publish) and s8s8 (what the TensorRT target publishes). ``--int8-alternatives`` also times other
quantization settings (QOperator, 8-bit u8s8 weights, per-tensor, the other calibration methods).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime

from radserve.export.onnx_export import export_onnx
from radserve.export.precision import INT8_CALIBRATION, INT8_CALIBRATIONS, convert_fp16, quantize_int8
from radserve.export.samples import sample_images
from radserve.loadtests.raw import cpu_session
from radserve.model_card import INPUT_NAME, ModelCard
from radserve.settings import SETTINGS

if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)
DEMO_CHECKPOINT = Path("build/demo-resnet18.pt")


@dataclass(frozen=True)
class Row:
    variant: str
    img_per_s: dict[int, float]
    best_img_per_s: float
    best_batch: int
    top1_agreement_vs_fp32: float
    max_abs_diff_vs_fp32: float
    file_mb: float


def throughput(runner: onnxruntime.InferenceSession, images: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second at ``batch``, after a warm-up, over at least ``seconds`` (and 3 runs)."""
    feed = {INPUT_NAME: np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))}
    runner.run(None, feed)
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < seconds:
        runner.run(None, feed)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def probabilities(runner: onnxruntime.InferenceSession, images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [runner.run(None, {INPUT_NAME: images[i : i + 8]})[0] for i in range(0, len(images), 8)]
    )


def load_network(checkpoint: Path | None, arch: str, size: int) -> tuple[torch.nn.Module, ModelCard]:
    import torch

    from radserve.export.architectures import build_model
    from radserve.export.checkpoint import load_checkpoint
    from radserve.synthetic.dataset import REGIONS

    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, "bench")
        return loaded.model, loaded.card
    LOGGER.warning("no checkpoint: random-init %s (agreement figures are not meaningful)", arch)
    torch.manual_seed(0)
    card = ModelCard(name="bench", architecture=arch, labels=REGIONS, input_size=(size, size))
    return build_model(arch, card.num_classes), card


def make_variants(
    network: torch.nn.Module, card: ModelCard, calibration: np.ndarray, folder: Path, alternatives: bool
) -> dict[str, Path]:
    """The ONNX files of every variant, made by export's own functions."""
    variants = {
        "fp32": folder / "fp32.onnx",
        "fp16": folder / "fp16.onnx",
        "int8 (u8s8, CPU targets)": folder / "int8.onnx",
        "int8 (s8s8, TensorRT)": folder / "int8_s8s8.onnx",
    }
    export_onnx(network, card, variants["fp32"])
    convert_fp16(variants["fp32"], variants["fp16"])
    quantize_int8(variants["fp32"], variants["int8 (u8s8, CPU targets)"], calibration, scheme="u8s8")
    quantize_int8(variants["fp32"], variants["int8 (s8s8, TensorRT)"], calibration, scheme="s8s8")
    if alternatives:
        settings_by_name = {
            "int8_qoperator_u8s8": {"quant_format": "QOperator", "scheme": "u8s8"},
            "int8_qdq_u8s8_8bit_weights": {"scheme": "u8s8", "reduce_range": False},
            "int8_qdq_u8s8_per_tensor": {"scheme": "u8s8", "per_channel": False},
            "int8_qdq_s8s8_per_tensor": {"per_channel": False},
            **{
                f"int8_qdq_u8s8_{method}": {"scheme": "u8s8", "calibration_method": method}
                for method in INT8_CALIBRATIONS
                if method != INT8_CALIBRATION
            },
        }
        for name, settings in settings_by_name.items():
            variants[name] = folder / f"{name}.onnx"
            quantize_int8(variants["fp32"], variants[name], calibration, **settings)  # type: ignore[arg-type]  # str values
    return variants


def print_table(
    rows: list[Row], card: ModelCard, source: str, threads: int, batches: list[int], samples: int
) -> None:
    print(
        f"\n{card.architecture} @ {card.input_size[0]}x{card.input_size[1]} ({source}), "
        f"ONNX Runtime {onnxruntime.__version__}, {threads} threads, {samples} radiographs"
    )
    header = " | ".join(f"b{batch}" for batch in batches)
    print(f"| variant | {header} | best img/s | vs fp32 | top-1 agreement | max abs diff | MB |")
    print("|---" * (len(batches) + 6) + "|")
    base = rows[0].best_img_per_s
    for row in rows:
        rates = " | ".join(f"{row.img_per_s[batch]:.1f}" for batch in batches)
        print(
            f"| {row.variant} | {rates} | {row.best_img_per_s:.1f} (b{row.best_batch}) | "
            f"{row.best_img_per_s / base:.2f}x | {row.top1_agreement_vs_fp32:.1%} | "
            f"{row.max_abs_diff_vs_fp32:.2e} | {row.file_mb} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=DEMO_CHECKPOINT if DEMO_CHECKPOINT.is_file() else None
    )
    parser.add_argument("--arch", default="resnet18", help="without --checkpoint")
    parser.add_argument("--input-size", type=int, default=224, help="without --checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant and batch size")
    parser.add_argument("--samples", type=int, default=64, help="radiographs for the agreement figures")
    parser.add_argument("--calibration-samples", type=int, default=SETTINGS.export.calibration_samples)
    parser.add_argument("--int8-alternatives", action="store_true")
    parser.add_argument("--json", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    network, card = load_network(args.checkpoint, args.arch, args.input_size)
    images = sample_images(card, args.samples)
    calibration = sample_images(card, args.calibration_samples, seed=1)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="radserve-bench-") as work:
        variants = make_variants(network, card, calibration, Path(work), args.int8_alternatives)
        reference = probabilities(cpu_session(variants["fp32"], args.threads), images)
        for name, path in variants.items():
            runner = cpu_session(path, args.threads)
            candidate = probabilities(runner, images)
            rates = {
                batch: round(throughput(runner, images, batch, args.seconds), 1) for batch in args.batches
            }
            best = max(rates, key=lambda batch: rates[batch])
            rows.append(
                Row(
                    variant=name,
                    img_per_s=rates,
                    best_img_per_s=rates[best],
                    best_batch=best,
                    top1_agreement_vs_fp32=float(np.mean(candidate.argmax(1) == reference.argmax(1))),
                    max_abs_diff_vs_fp32=float(np.abs(candidate - reference).max()),
                    file_mb=round(path.stat().st_size / 1e6, 1),
                )
            )
            LOGGER.info("%s", rows[-1])

    source = str(args.checkpoint) if args.checkpoint else f"random-init {args.arch}"
    print_table(rows, card, source, args.threads, args.batches, len(images))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": card.architecture,
            "input_size": list(card.input_size),
            "source": source,
            "threads": args.threads,
            "onnxruntime": onnxruntime.__version__,
            "samples": len(images),
            "rows": [asdict(row) for row in rows],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
