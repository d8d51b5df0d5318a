"""MLServer 1.7 with a custom runtime holding the ONNX Runtime engine; KServe v2 gRPC; adaptive batching.

One process (``parallel_workers=0``: MLServer's worker pool fails in this environment with "There
is no current event loop in thread 'MainThread'"); adaptive batching on (``max_batch_size``,
``max_batch_time``), which concatenates requests along the first axis and splits the answers.
"""

from __future__ import annotations

import asyncio

from _engine import INPUT_NAME, OUTPUT_NAME, Engine, arguments
from mlserver import MLModel, MLServer
from mlserver.codecs import NumpyCodec
from mlserver.settings import ModelParameters, ModelSettings, Settings
from mlserver.types import InferenceRequest, InferenceResponse

ARGS = arguments(__doc__.splitlines()[0])


class OnnxRuntimeModel(MLModel):
    async def load(self) -> bool:
        self._engine = Engine(ARGS.onnx, ARGS.sessions, ARGS.threads)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        (image,) = (item for item in payload.inputs if item.name == INPUT_NAME)
        probabilities = await self._engine.arun(NumpyCodec.decode_input(image))
        output = NumpyCodec.encode_output(OUTPUT_NAME, probabilities)
        return InferenceResponse(model_name=self.name, outputs=[output])


async def main() -> None:
    settings = Settings(
        http_port=0,
        grpc_port=ARGS.port,
        metrics_port=0,
        parallel_workers=0,
        host="127.0.0.1",
        debug=False,
    )
    model = ModelSettings(
        name="peer",
        implementation=OnnxRuntimeModel,
        max_batch_size=ARGS.max_batch,
        max_batch_time=ARGS.batch_wait_ms / 1000,
        parameters=ModelParameters(uri=ARGS.onnx),
    )
    await MLServer(settings).start([model])


if __name__ == "__main__":
    asyncio.run(main())
