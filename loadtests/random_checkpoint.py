"""A radserve checkpoint of an architecture's own random initialisation, for speed benchmarks only.

    python -m radserve.loadtests.random_checkpoint mobilenet_v3_small build/mobilenet_v3_small.pt

Throughput does not depend on the weights' values; probabilities of such a model mean nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from radserve.export.architectures import build_model
    from radserve.export.checkpoint import save_checkpoint
    from radserve.model_card import ModelCard
    from radserve.synthetic.dataset import REGIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architecture")
    parser.add_argument("output", type=Path)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--labels", nargs="+", default=list(REGIONS), help="class labels (default: regions)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    size = (args.input_size, args.input_size)
    labels = tuple(args.labels)
    card = ModelCard(args.architecture, args.architecture, labels, size, resize="letterbox")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output, build_model(args.architecture, len(labels)), card)
    print(f"wrote {args.output} (random-init {args.architecture} @ {args.input_size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
