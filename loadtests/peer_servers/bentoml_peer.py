"""BentoML (1.4) with a service holding the ONNX Runtime engine; HTTP; adaptive batching.

BentoML's binary (pickle) payloads are refused by its public server (``_bentoml_impl/server/app.py``:
"application/vnd.bentoml+pickle is not allowed in main server"), so each radiograph travels as a
base64 string in JSON: ``{"images": [b64, ...]}`` (``uint8 [C, H, W]`` each, ``--shape``) in, one
base64 ``float32`` row per radiograph out. The API is ``batchable``: BentoML's adaptive batcher
concatenates the lists of concurrent requests (up to ``--max-batch`` radiographs, ``--batch-wait-ms``).
Run as a script, it starts ``bentoml serve`` on itself with the arguments passed in the environment.
"""

from __future__ import annotations

import base64
import json
import os
import sys

import bentoml
import numpy as np
from _engine import Engine

_ENV = "RADSERVE_PEER_ARGS"
ARGS = json.loads(os.environ.get(_ENV, "{}"))


@bentoml.service(workers=ARGS.get("sessions", 1), traffic={"timeout": 120, "max_concurrency": 256})
class Peer:
    def __init__(self) -> None:
        self._engine = Engine(ARGS["onnx"], 1, ARGS["threads"])
        self._shape = tuple(ARGS["shape"])

    @bentoml.api(
        batchable=True,
        max_batch_size=ARGS.get("max_batch", 8),
        max_latency_ms=ARGS.get("max_latency_ms", 60000),
    )
    def predict(self, images: list[str]) -> list[str]:
        stacked = np.stack(
            [np.frombuffer(base64.b64decode(image), np.uint8).reshape(self._shape) for image in images]
        )
        probabilities = np.ascontiguousarray(self._engine.run(stacked), dtype=np.float32)
        return [base64.b64encode(row.tobytes()).decode() for row in probabilities]


if __name__ == "__main__":
    from _engine import arguments

    parser_args = arguments(__doc__.splitlines()[0])
    os.environ[_ENV] = json.dumps(
        {
            "onnx": parser_args.onnx, "sessions": parser_args.sessions, "threads": parser_args.threads,
            "max_batch": parser_args.max_batch, "shape": parser_args.shape,
        }
    )  # fmt: skip
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, "-m", "bentoml", "serve", "bentoml_peer:Peer", "--host", "127.0.0.1"]
    os.chdir(here)
    os.execv(sys.executable, [*command, "--port", str(parser_args.port)])
