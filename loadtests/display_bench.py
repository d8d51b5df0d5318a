"""Display table + resize of one radiograph on one core: the one-pass path against the two-pass one.

    python -m radserve.loadtests.display_bench [--matrix 2500 2048] [--repeats 15]

Two-pass (the reference): ``lut[values]`` to a full-size 8-bit image, then ``cv2.INTER_AREA``.
One-pass (radserve): :meth:`Radiograph.resized`. Both run in this process, interleaved, so a shared
machine disturbs both alike: the ratio is the figure to quote, with its median and range.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable

import cv2
import numpy as np

from radserve.client.dicom import Radiograph, radiographs_from_dataset
from radserve.synthetic.dataset import synthetic_dataset


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(radiograph: Radiograph, size: tuple[int, int], repeats: int) -> dict[str, object]:
    """Milliseconds of each path per repeat and their ratios (two-pass / one-pass), median and range."""
    height, width = size

    def two_pass() -> np.ndarray:
        return cv2.resize(radiograph.lut[radiograph.values], (width, height), interpolation=cv2.INTER_AREA)

    def one_pass() -> np.ndarray:
        return radiograph.resized(size, "stretch")

    error = int(np.abs(two_pass().astype(int) - one_pass()).max())  # also compiles the kernel
    times = np.array([(_seconds(two_pass), _seconds(one_pass)) for _ in range(repeats)]) * 1000
    ratios = times[:, 0] / times[:, 1]
    return {
        "matrix": list(radiograph.values.shape),
        "size": list(size),
        "two_pass_ms": [round(float(t), 2) for t in times[:, 0]],
        "one_pass_ms": [round(float(t), 2) for t in times[:, 1]],
        "median_ms": {"two_pass": float(np.median(times[:, 0])), "one_pass": float(np.median(times[:, 1]))},
        "speed_up": {
            "median": float(np.median(ratios)),
            "min": float(ratios.min()),
            "max": float(ratios.max()),
        },
        "max_grey_level_difference": error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, nargs=2, default=(2500, 2048), metavar=("ROWS", "COLS"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # one core for both paths
    seeds = (np.random.default_rng(seed) for seed in itertools.count())
    datasets = (synthetic_dataset("knee", rng, matrix=tuple(args.matrix)) for rng in seeds)
    dataset = next(ds for ds in datasets if ds.BitsStored == 12)  # a 12-bit radiograph
    (radiograph,) = radiographs_from_dataset(dataset, "bench")
    print(json.dumps(measure(radiograph, (args.size, args.size), args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
