"""Triton Python-backend model running an ONNX graph with ONNX Runtime (the ``embedded`` target).

Export copies this file as ``<model>/<version>/model.py``. It imports nothing from radserve so that
the model folder is self-contained. Each call to :meth:`TritonPythonModel.execute` receives one
dynamic batch: all its requests are concatenated and run as one ``session.run``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Serves ``model.onnx`` from this version folder."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        threads = int(parameters.get("onnxruntime_threads", "0"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        folder = os.path.join(args["model_repository"], args["model_version"])
        filename = parameters.get("onnx_model_filename", "model.onnx")
        self.session = onnxruntime.InferenceSession(
            os.path.join(folder, filename), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        images = [
            pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests
        ]
        sizes = [len(image) for image in images]
        batch = images[0] if len(images) == 1 else np.concatenate(images)
        try:
            outputs = self.session.run(self.output_names, {self.input_name: batch})
        except Exception as error:  # one bad batch must answer every request, not kill the model
            failure = pb_utils.TritonError(f"inference failed: {error}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        bounds = np.cumsum(sizes)[:-1]
        parts = [np.split(output, bounds) for output in outputs]
        responses = []
        for index in range(len(requests)):
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(part[index], dtype=np.float32))
                for name, part in zip(self.output_names, parts, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.session = None
