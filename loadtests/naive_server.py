"""The naive baseline: a model deployed by hand, without a serving system.

The standard library's ``ThreadingHTTPServer`` (a thread per connection) + PyTorch eager, the way a
classifier is often put behind an endpoint: POST ``/predict`` with the wire image's raw bytes (uint8,
shape in ``X-Shape``), JSON probabilities back. No batching, no graph optimisation. ``--precision``
is the served variant's where PyTorch eager has it on the CPU (fp32, fp16); an int8 variant is
compared with fp32 (``radserve.loadtests.naive.eager_precision``). The weights are the
architecture's own initialisation: the time per image does not depend on their values.

    python -m radserve.loadtests.naive_server --architecture resnet18 --classes 5 --size 224 --port 8500
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from radserve.export.architectures import build_model
from radserve.export.serving_graph import ServingGraph
from radserve.model_card import ModelCard


class HalfGraph(torch.nn.Module):
    """The serving graph with the network in float16; normalisation and softmax in float32."""

    def __init__(self, graph: ServingGraph) -> None:
        super().__init__()
        self.graph = graph
        self.network = graph.network.half()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        graph = self.graph
        pixels = image.to(torch.float32).expand(-1, 3, -1, -1)
        logits = self.network(((pixels - graph.mean) * graph.scale).half()).float()
        return torch.softmax(logits * graph.inverse_temperature, dim=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="resnet18")
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    args = parser.parse_args(argv)
    labels = tuple(f"class{index}" for index in range(args.classes))
    card = ModelCard("naive", args.architecture, labels, tuple(args.size))
    graph: torch.nn.Module = ServingGraph(build_model(args.architecture, args.classes), card).eval()
    if args.precision == "fp16":
        graph = HalfGraph(graph).eval()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            shape = [int(part) for part in self.headers["X-Shape"].split(",")]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            image = torch.from_numpy(np.frombuffer(body, dtype=np.uint8).reshape(shape).copy())
            with torch.inference_mode():
                probabilities = graph(image).numpy().tolist()
            reply = json.dumps({"probabilities": probabilities}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            return

    ThreadingHTTPServer.request_queue_size = 128  # the default 5 resets connections at 16 in flight
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
