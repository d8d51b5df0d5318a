"""A radserve checkpoint of an architecture's own random initialisation, for speed benchmarks only.

    python -m radserve.loadtests.random_checkpoint mobilenet_v3_small build/mobilenet_v3_small.pt
    python -m radserve.loadtests.random_checkpoint --system spine-view build/spine-view.pt

Throughput does not depend on the weights' values; probabilities of such a model mean nothing, and
are the same for every input (a random head on unnormalised features: uniform). A parity check
needs a network whose answers depend on the input: :func:`calibrate_random_network` sets its batch
norm statistics from wire images and scales its head so that its logits spread.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    from radserve.model_card import ModelCard

_LOGIT_SPREAD = 2.0  # standard deviation of the calibrated network's logits over the images


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


def calibrate_random_network(network: torch.nn.Module, card: ModelCard, images: np.ndarray) -> None:
    """Batch norm statistics from ``images`` (``uint8 [N, C, H, W]`` wire images, as served), and the
    last linear layer scaled so that the logits' standard deviation over them is ``_LOGIT_SPREAD``."""
    import torch

    from radserve.export.serving_graph import ServingGraph

    graph = ServingGraph(network, card)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    head = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    logits: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, _inputs, output: logits.append(output))
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches
        graph.train()
        for start in range(0, len(images), 8):
            graph(torch.from_numpy(images[start : start + 8]))
        graph.eval()
        logits.clear()
        graph(torch.from_numpy(images[:8]))
        handle.remove()
        scale = _LOGIT_SPREAD / max(float(logits[0].std()), 1e-12)
        head.weight.mul_(scale)
        if head.bias is not None:
            head.bias.mul_(scale)
    for norm in norms:
        norm.momentum = 0.1


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
