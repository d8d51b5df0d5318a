"""Radiographs/s through a router against the client calling its stages itself, in one run.

    python -m radserve.loadtests.router_bench FOLDER --router NAME --url HOST:PORT [--concurrency 8]

Both paths send the same prepared wire images (decoded once, before timing: the router and its
stages see the exact tensors ``radserve classify`` sends), one radiograph per request, at the same
concurrency, interleaved ``--repeats`` times so a shared machine disturbs both alike:

- **router**: one request to the router (first stage and downstream model inside Triton, BLS);
- **direct**: the first stage's request, then the request to the model its label routes to.

Prints JSON: img/s of each path per repeat, their medians, the ratio router / direct, and how many
radiographs went to each downstream model (both paths must agree).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from radserve.client.flow import prepare_file
from radserve.client.grpc_client import AsyncRadiographClient
from radserve.client.inputs import discover
from radserve.routing import DOWNSTREAM_OUTPUT, ROUTER_OUTPUTS, RouterCard

Wires = dict[str, np.ndarray]


async def _rate(
    wires: list[Wires], concurrency: int, one: Callable[[Wires], Awaitable[str]]
) -> tuple[float, Counter]:
    """Radiographs/s of ``one`` over ``wires`` with ``concurrency`` in flight, and where each went."""
    pending = iter(wires)
    went: Counter = Counter()

    async def worker() -> None:
        for item in pending:
            went[await one(item)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(wires) / (time.perf_counter() - started), went


async def measure(url: str, router_name: str, folder: Path, concurrency: int, repeats: int) -> dict:
    """Both paths, interleaved, over the radiographs under ``folder``."""
    async with AsyncRadiographClient(url, max_in_flight=concurrency) as client:
        await client.wait_ready(router_name)
        router = await client.served_card(router_name)
        if not isinstance(router, RouterCard):
            raise SystemExit(f"{router_name} is not a router")
        wires = [
            r.image for path in discover([folder]).files for r in prepare_file(str(path), router).radiographs
        ]
        first = router.first

        async def routed(item: Wires) -> str:
            prediction = await client.infer(
                router_name, {k: v[None] for k, v in item.items()}, ROUTER_OUTPUTS
            )
            index = int(prediction.extra[DOWNSTREAM_OUTPUT][0, 0])
            return router.downstream[index].model if index >= 0 else first.model

        async def direct(item: Wires) -> str:
            answer = await client.infer(first.model, item[first.input][None])
            stage = router.route(first.card.labels[int(np.argmax(answer.probabilities[0]))])
            if stage is None:
                return first.model
            await client.infer(stage.model, item[stage.input][None])
            return stage.model

        runs: dict[str, list[float]] = {"router": [], "direct": []}
        went: dict[str, Counter] = {}
        for name, one in (("router", routed), ("direct", direct)) * (repeats + 1):
            rate, went[name] = await _rate(wires, concurrency, one)
            runs[name].append(rate)
    runs = {name: rates[1:] for name, rates in runs.items()}  # the first round of each warms up
    medians = {name: statistics.median(rates) for name, rates in runs.items()}
    return {
        "radiographs": len(wires),
        "concurrency": concurrency,
        "img_per_s": runs,
        "median_img_per_s": medians,
        "ratio_router_to_direct": medians["router"] / medians["direct"],
        "answered_by": {name: dict(counts) for name, counts in went.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--router", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.url, args.router, args.folder, args.concurrency, args.repeats))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
