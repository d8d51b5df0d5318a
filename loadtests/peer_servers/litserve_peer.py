"""LitServe (0.2) with an API holding the ONNX Runtime engine; HTTP; ``max_batch_size`` batching.

LitServe's request path parses JSON or forms only (``litserve/server.py``, ``_prepare_request``),
so the tensor travels base64-encoded in JSON: ``{"image": b64, "shape": [B, C, H, W]}`` in,
``{"probabilities": b64, "shape": [B, classes]}`` out (float32). ``--sessions`` inference workers
(processes), each with one engine session of ``--threads`` threads.
"""

from __future__ import annotations

import base64

import litserve
import numpy as np
from _engine import Engine, arguments, split

ARGS = arguments(__doc__.splitlines()[0])


class PeerAPI(litserve.LitAPI):
    def setup(self, device: str) -> None:
        self._engine = Engine(ARGS.onnx, 1, ARGS.threads)
        self._sizes: list[int] = []

    def decode_request(self, request: dict) -> np.ndarray:
        return np.frombuffer(base64.b64decode(request["image"]), dtype=np.uint8).reshape(request["shape"])

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        self._sizes = [len(images) for images in inputs]
        return np.concatenate(inputs)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._engine.run(images)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return split(output, self._sizes)

    def encode_response(self, output: np.ndarray) -> dict:
        probabilities = np.ascontiguousarray(output, dtype=np.float32)
        return {
            "probabilities": base64.b64encode(probabilities.tobytes()).decode(),
            "shape": probabilities.shape,
        }


if __name__ == "__main__":
    api = PeerAPI(max_batch_size=ARGS.max_batch, batch_timeout=ARGS.batch_wait_ms / 1000)
    server = litserve.LitServer(api, accelerator="cpu", workers_per_device=ARGS.sessions, timeout=120)
    server.run(host="127.0.0.1", port=ARGS.port, generate_client_file=False, log_level="warning")
