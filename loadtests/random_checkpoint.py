"""A radserve checkpoint of an architecture's own random initialisation, for speed benchmarks only.

    python -m radserve.loadtests.random_checkpoint mobilenet_v3_small build/mobilenet_v3_small.pt
    python -m radserve.loadtests.random_checkpoint --system spine-view build/spine-view.pt

Throughput does not depend on the weights' values; probabilities of such a model mean nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def write_random_checkpoint(
    architecture: str,
    output: Path,
    *,
    labels: Sequence[str] | None = None,
    input_size: tuple[int, int] = (224, 224),
    channels: int = 1,
    resize: str = "letterbox",
) -> Path:
    """Write a seeded random-init ``architecture`` (``labels``: the body regions by default) to ``output``."""
    import torch

    from radserve.export.architectures import build_model
    from radserve.export.checkpoint import save_checkpoint
    from radserve.model_card import ModelCard
    from radserve.synthetic.dataset import REGIONS

    labels = tuple(labels or REGIONS)
    torch.manual_seed(0)
    card = ModelCard(architecture, architecture, labels, input_size, resize=resize, channels=channels)  # type: ignore[arg-type]  # resize: ModelCard checks it
    output.parent.mkdir(parents=True, exist_ok=True)
    network_channels = 3 if channels == 1 else channels
    save_checkpoint(output, build_model(architecture, len(labels), network_channels), card)
    return output


def write_system_checkpoint(system: str, output: Path) -> Path:
    """A random-init checkpoint of ``system``'s study architecture, labels, channels and input size."""
    from radserve.systems import get_system

    contract = get_system(system)
    return write_random_checkpoint(
        contract.architecture,
        output,
        labels=contract.labels,
        input_size=contract.input_size,
        channels=contract.channels,
        resize=contract.resize,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architecture", nargs="?", help="a torchvision architecture (or --system)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--system", help="a served system's architecture, labels, channels and input size")
    parser.add_argument("--labels", nargs="+", help="class labels (default: the body regions)")
    args = parser.parse_args(argv)
    if args.system:
        write_system_checkpoint(args.system, args.output)
        print(f"wrote {args.output} (random-init {args.system})")
    elif args.architecture:
        size = (args.input_size, args.input_size)
        write_random_checkpoint(args.architecture, args.output, labels=args.labels, input_size=size)
        print(f"wrote {args.output} (random-init {args.architecture} @ {args.input_size})")
    else:
        parser.error("give an architecture or --system")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
