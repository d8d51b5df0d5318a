"""KServe's Python model server (0.21) with a model holding the ONNX Runtime engine; v2 gRPC.

KServe's Python server has no batcher of its own (batching is KServe's agent in front of a pod):
every request runs as it comes, on one of the engine's sessions. KServe binds every interface
(``[::]`` for gRPC, ``0.0.0.0`` for REST, hard-coded): the bench runs it in a loopback-only network
namespace.
"""

from __future__ import annotations

import kserve
from _engine import INPUT_NAME, OUTPUT_NAME, Engine, arguments
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

ARGS = arguments(__doc__.splitlines()[0])


class OnnxRuntimeModel(kserve.Model):
    def __init__(self) -> None:
        super().__init__("peer")
        self._engine = Engine(ARGS.onnx, ARGS.sessions, ARGS.threads)
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        (image,) = (item for item in payload.inputs if item.name == INPUT_NAME)
        probabilities = await self._engine.arun(image.as_numpy())
        output = InferOutput(OUTPUT_NAME, list(probabilities.shape), "FP32")
        output.set_data_from_numpy(probabilities, binary_data=True)
        return InferResponse(payload.id, self.name, [output], use_binary_outputs=True)


if __name__ == "__main__":
    server = kserve.ModelServer(http_port=0, grpc_port=ARGS.port, workers=1, enable_grpc=True)
    server.start([OnnxRuntimeModel()])
