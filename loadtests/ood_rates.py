"""How often the out-of-distribution flag fires on radiographs and on other images, for one checkpoint.

    python -m radserve.loadtests.ood_rates [--checkpoint build/demo-resnet18.pt] [--held-out 200]

The threshold is chosen exactly as ``radserve export`` chooses it (the top probability of the
PyTorch reference on the parity samples, synthetic seed 0). It is then applied to held-out synthetic
radiographs (another seed) and to every image of pydicom's test files that the default input
contract refuses (CT, MR, US, NM, palette colour, RGB, ...; each instance once, at most 4 frames),
preprocessed as the client does with ``--accept-any``. Prints JSON: the threshold and the flagged
share of each set, and the AUROC of the top probability as a detector of the non-radiographs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pydicom.data
from sklearn.metrics import roc_auc_score

from radserve.client.contract import read_accepted
from radserve.client.preprocess import model_input
from radserve.errors import InputError, NotAcceptedError
from radserve.export.parity import torch_probabilities
from radserve.export.pipeline import ood_threshold
from radserve.export.samples import sample_images
from radserve.export.sources import load_source
from radserve.model_card import InputContract, ModelCard
from radserve.settings import SETTINGS


def non_radiographs(card: ModelCard) -> tuple[list[str], np.ndarray]:
    """Names and wire images of the pydicom test images that the card's contract refuses."""
    names, images, seen = [], [], set()
    for path in sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm")):
        try:
            read_accepted(path, card.accepts)
            continue  # accepted by its header: not in this set
        except NotAcceptedError:
            pass
        except InputError:
            continue
        try:
            radiographs = read_accepted(path, InputContract.any())
        except InputError:
            continue  # refused, and not decodable either
        for radiograph in radiographs[:4]:  # a few frames of a cine loop
            if (radiograph.sop_instance_uid, radiograph.frame) in seen:
                continue  # the same instance in another transfer syntax
            seen.add((radiograph.sop_instance_uid, radiograph.frame))
            names.append(f"{path.name}[{radiograph.frame or 1}]")
            images.append(model_input(radiograph, card))
    return names, np.stack(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("build/demo-resnet18.pt"))
    parser.add_argument("--held-out", type=int, default=200, help="held-out synthetic radiographs")
    args = parser.parse_args(argv)
    loaded = load_source(args.checkpoint, "ood")
    card = loaded.card

    def top(images: np.ndarray) -> np.ndarray:
        return torch_probabilities(loaded.model, card, images).max(axis=1)

    validation = sample_images(card, SETTINGS.export.parity_samples)
    threshold = float(
        ood_threshold(torch_probabilities(loaded.model, card, validation), "synthetic").threshold
    )
    held_out = top(sample_images(card, args.held_out, seed=7))
    names, others = non_radiographs(card)
    other_top = top(others)
    is_other = np.r_[np.zeros(held_out.size), np.ones(other_top.size)]
    report = {
        "threshold": threshold,
        # 0.5: the top probability does not tell the two sets apart; 1.0: it separates them fully
        "auroc": float(roc_auc_score(is_other, -np.r_[held_out, other_top])),
        "held_out_radiographs": {
            "count": int(held_out.size),
            "flagged": float((held_out < threshold).mean()),
        },
        "non_radiographs": {
            "count": len(names),
            "flagged": float((other_top < threshold).mean()),
            "top_probability": dict(zip(names, np.round(other_top, 4).tolist(), strict=True)),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
