"""Ray Serve (2.60) with a deployment holding the ONNX Runtime engine; HTTP, binary bodies; ``@serve.batch``.

``POST /predict``: the body is the ``uint8`` tensor, its shape in ``X-Shape``; the answer is the
``float32`` probabilities, their shape in ``X-Shape``. ``@serve.batch`` gathers up to
``--max-batch`` requests (waiting at most ``--batch-wait-ms``) into one engine call.
"""

from __future__ import annotations

import time

import numpy as np
import ray
from _engine import Engine, arguments, split
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

ARGS = arguments(__doc__.splitlines()[0])


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
class Peer:
    def __init__(self, onnx: str, sessions: int, threads: int) -> None:
        self._engine = Engine(onnx, sessions, threads)

    @serve.batch(max_batch_size=ARGS.max_batch, batch_wait_timeout_s=ARGS.batch_wait_ms / 1000)
    async def infer(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        probabilities = await self._engine.arun(np.concatenate(requests))
        return split(probabilities, [len(images) for images in requests])

    async def __call__(self, request: Request) -> Response:
        shape = tuple(int(size) for size in request.headers["x-shape"].split(","))
        images = np.frombuffer(await request.body(), dtype=np.uint8).reshape(shape)
        probabilities = np.ascontiguousarray(await self.infer(images), dtype=np.float32)
        headers = {"x-shape": ",".join(map(str, probabilities.shape))}
        return Response(probabilities.tobytes(), headers=headers, media_type="application/octet-stream")


if __name__ == "__main__":
    # every Ray process on loopback (Ray picks the host's own address otherwise)
    ray.init(
        _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    serve.start(http_options={"host": "127.0.0.1", "port": ARGS.port})
    serve.run(Peer.bind(ARGS.onnx, ARGS.sessions, ARGS.threads), route_prefix="/predict")
    print("ready", flush=True)
    while True:
        time.sleep(3600)
