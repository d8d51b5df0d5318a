"""Where a served request's time goes, one request in flight: client, gRPC + Triton + stub, model.py.

    python -m radserve.loadtests.overhead --model NAME [--repository DIR] [--before OLD_model.py]

Serves the model's newest version (host-sized, as ``radserve serve`` does) with the current
``export/embedded_model.py`` and, with ``--before``, a second copy with another ``model.py`` (e.g.
``git show main:export/embedded_model.py > /tmp/before.py``); the copies are measured in alternating
rounds in one run (ABBA order), so their ratios compare like with like; ``--before`` the current
file itself shows the noise (an A/A run). Per request (medians, µs):

- client: building the gRPC request from the wire image (``InferInput`` + ``set_data_from_numpy``);
- model.py stages from ``RADSERVE_STAGE_LOG``: inputs, concatenation, ONNX Runtime, responses;
- ONNX Runtime alone in this process (one thread, batch 1, the instance's layout);
- the rest (gRPC both ways, Triton's scheduler, the stub's shared-memory IPC): latency minus model.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from radserve.loadtests.bench import latest_version, measure_served, wire_images
from radserve.model_card import INPUT_NAME, ModelCard
from radserve.settings import SETTINGS

STAGES = ("inputs", "concatenate", "onnxruntime", "responses")


def _repository(source: Path, model: str, model_py: Path, into: Path) -> Path:
    version = latest_version(source, model)
    shutil.copytree(version, into / model / "1")
    for extra in ("config.pbtxt", "labels.txt"):
        if (source / model / extra).exists():
            shutil.copy(source / model / extra, into / model / extra)
    shutil.copy(model_py, into / model / "1" / "model.py")
    return into


def _client_microseconds(images: list[np.ndarray], count: int = 2000) -> float:
    import tritonclient.grpc as grpcclient

    started = time.perf_counter()
    for index in range(count):
        image = images[index % len(images)]
        request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "UINT8")
        request.set_data_from_numpy(image)
    return (time.perf_counter() - started) / count * 1e6


def _ort_microseconds(onnx_path: Path, image: np.ndarray, seconds: float) -> float:
    from radserve.loadtests.raw import cpu_session

    session = cpu_session(str(onnx_path), 1)
    session.run(None, {INPUT_NAME: image})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        session.run(None, {INPUT_NAME: image})
        times.append(time.perf_counter() - sent)
    return statistics.median(times) * 1e6


def _stages(log_prefix: Path) -> dict[str, float]:
    """Median µs per stage over the single-request calls logged by every instance."""
    rows = [
        [float(value) for value in line.split()[2:]]
        for path in log_prefix.parent.glob(f"{log_prefix.name}.*")
        for line in path.read_text().splitlines()
        if line.startswith("1 1 ")
    ]
    if not rows:
        return {}
    return {stage: statistics.median(row[i] for row in rows) * 1e6 for i, stage in enumerate(STAGES)}


def main(argv: list[str] | None = None) -> int:
    from radserve.server_config.triton import TritonServer, free_ports

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    parser.add_argument("--before", type=Path, help="another model.py to compare with (e.g. main's)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round and copy")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    version = latest_version(args.repository, args.model)
    images = wire_images(ModelCard.read(version), None)
    current = Path(__file__).parents[1] / "export" / "embedded_model.py"
    copies = {"after": current, **({"before": args.before} if args.before else {})}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in copies}
    with tempfile.TemporaryDirectory(prefix="radserve-overhead-") as work:
        servers = {}
        for name, model_py in copies.items():
            repository = _repository(args.repository, args.model, model_py, Path(work) / name)
            os.environ["RADSERVE_STAGE_LOG"] = str(Path(work) / f"{name}-stages")
            servers[name] = TritonServer(repository, ports=free_ports()).start()
        os.environ.pop("RADSERVE_STAGE_LOG")
        try:
            for round_index in range(args.rounds):
                order = list(servers.items())
                for name, server in order if round_index % 2 == 0 else order[::-1]:  # ABBA: no order bias
                    for concurrency in (1, 16):
                        (point,) = measure_served(
                            server.grpc_url, args.model, images, ((concurrency, 1),), args.seconds, repeats=1
                        )
                        results[name].setdefault(f"p50_us_c{concurrency}", []).append(point.p50_ms * 1000)
                        results[name].setdefault(f"img_s_c{concurrency}", []).append(point.images_per_second)
        finally:
            for server in servers.values():
                server.stop()
        stages = {name: _stages(Path(work) / f"{name}-stages") for name in copies}
    client = _client_microseconds(images)
    engine = _ort_microseconds(version / "model.onnx", images[0], args.seconds)
    print(f"{args.model}: one request in flight, medians of {args.rounds} rounds (µs per request)")
    print(f"client request building {client:.0f}; ONNX Runtime alone (1 thread, b1) {engine:.0f}")
    for name in copies:
        figures = {key: statistics.median(values) for key, values in results[name].items()}
        inside = sum(stages[name].values())
        stage_text = ", ".join(f"{stage} {value:.0f}" for stage, value in stages[name].items())
        print(
            f"{name:>6}: latency p50 {figures['p50_us_c1']:.0f} = model.py {inside:.0f} ({stage_text}) + "
            f"gRPC/Triton/stub/client {figures['p50_us_c1'] - inside:.0f}; "
            f"img/s c1 {figures['img_s_c1']:.1f}, c16 {figures['img_s_c16']:.1f}"
        )
    if args.before:
        after = {key: statistics.median(values) for key, values in results["after"].items()}
        before = {key: statistics.median(values) for key, values in results["before"].items()}
        print(
            f"after/before: latency c1 {after['p50_us_c1'] / before['p50_us_c1']:.3f}, "
            f"img/s c1 {after['img_s_c1'] / before['img_s_c1']:.3f}, "
            f"img/s c16 {after['img_s_c16'] / before['img_s_c16']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
