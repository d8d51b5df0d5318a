"""Triton Python-backend model running an ONNX graph with ONNX Runtime, or OpenVINO's CPU plugin
when the version's card (or the config's ``cpu_engine``) says so (the ``embedded`` target; bf16 variants run
on OpenVINO).

Export copies this file as ``<model>/<version>/model.py``. It imports nothing from radserve so that
the model folder is self-contained. Each call to :meth:`TritonPythonModel.execute` receives one
dynamic batch: all its requests are concatenated and run in slices of the config's
``engine_batch_size`` radiographs (0: one ``session.run`` for the whole batch), since small networks
run slower per radiograph in big batches on a CPU; a batch of one request is run on the request's
own array, and each answer is a view of the output (no copies). A graph whose batch axis is fixed at
1 (a detector exported with NMS inside, export/detector.py) is run once per image of the batch.

With ``RADSERVE_STAGE_LOG=FILE`` in tritonserver's environment, each call appends one line to
``FILE.<pid>``: requests, images, then the seconds spent reading the inputs, concatenating, in ONNX
Runtime and building the responses (``radserve.loadtests.overhead`` reads them).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils

STAGE_LOG = os.environ.get("RADSERVE_STAGE_LOG", "")

# How tensors cross the 2.51 stub (docs/how-to/serve-cpu.md, "numpy 2"), measured here: under numpy 2
# pb_utils.Tensor(name, ndarray) sends outputs with their shape and no bytes, and DLPack works; under
# numpy 1.26 DLPack crashes the stub (SIGSEGV after "Exception ignored in: <capsule 'used_dlpack'>")
# and the ndarray path works.
_DLPACK = int(np.__version__.split(".")[0]) >= 2


def _from_stub(tensor: Any) -> np.ndarray:
    return np.from_dlpack(tensor) if _DLPACK else tensor.as_numpy()


def _to_stub(name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor.from_dlpack(name, array) if _DLPACK else pb_utils.Tensor(name, array)


class OpenVinoSession:
    """OpenVINO's CPU plugin behind the two calls of ONNX Runtime's session this model makes.

    One stream (one inference at a time per instance, as one ONNX Runtime session) of ``threads``
    threads (0: OpenVINO's default), at ``precision`` (``f32``, or ``bf16`` where the CPU has it).
    """

    def __init__(self, path: str, threads: int, precision: str) -> None:
        import openvino

        config: dict[str, Any] = {"NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = openvino.Core().compile_model(path, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._input = self._compiled.input(0)

    @property
    def batch_axis(self) -> int | None:
        """The input's batch size when the graph fixes it (as ONNX Runtime reports it), else None."""
        axis = self._input.get_partial_shape()[0]
        return axis.get_length() if axis.is_static else None

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feed.values()
        result = self._request.infer({self._input: batch})
        return [np.ascontiguousarray(result[self._compiled.output(name)]) for name in output_names]


def _engine(folder: str, parameters: dict[str, str]) -> tuple[str, str]:
    """(CPU engine, OpenVINO inference precision) of this version: its own card's, which may differ from
    the config's (that of the newest version: ``radserve tune --apply`` publishes a version on another
    engine, and the versions before it keep theirs); the config's for a version without a card."""
    engine = parameters.get("cpu_engine", "onnxruntime")
    precision = parameters.get("inference_precision", "f32")
    card_path = os.path.join(folder, "model_card.json")
    if os.path.isfile(card_path):
        with open(card_path) as file:
            card = json.load(file)
        engine = card.get("cpu_engine", engine)
        precision = "bf16" if card.get("precision") == "bf16" else "f32"
    return engine, precision


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
        path = os.path.join(folder, parameters.get("onnx_model_filename", "model.onnx"))
        engine, precision = _engine(folder, parameters)
        self.session: Any
        if engine == "openvino":
            self.session = OpenVinoSession(path, threads, precision)
            batch_axis = self.session.batch_axis
        else:
            self.session = onnxruntime.InferenceSession(
                path, sess_options=options, providers=["CPUExecutionProvider"]
            )
            batch_axis = self.session.get_inputs()[0].shape[0]
        # a graph whose batch axis is fixed at 1 runs one image at a time
        self.engine_batch = 1 if batch_axis == 1 else int(parameters.get("engine_batch_size", "0"))
        self.input_name = config["input"][0]["name"]
        self.output_names = [output["name"] for output in config["output"]]
        self.stage_log = open(f"{STAGE_LOG}.{os.getpid()}", "a", buffering=1) if STAGE_LOG else None  # noqa: SIM115

    def execute(self, requests: list[Any]) -> list[Any]:
        started = time.perf_counter()
        images = [
            _from_stub(pb_utils.get_input_tensor_by_name(request, self.input_name)) for request in requests
        ]
        read = time.perf_counter()
        batch = images[0] if len(images) == 1 else np.concatenate(images)
        joined = time.perf_counter()
        try:
            outputs = self._run(batch)
        except Exception as error:  # one bad batch must answer every request, not kill the model
            failure = pb_utils.TritonError(f"inference failed: {error}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        ran = time.perf_counter()
        # ONNX Runtime returns C-contiguous float32 arrays: their row blocks are contiguous views
        responses = []
        start = 0
        for image in images:
            end = start + len(image)
            tensors = [
                _to_stub(name, output[start:end])
                for name, output in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        if self.stage_log is not None:
            stages = (read - started, joined - read, ran - joined, time.perf_counter() - ran)
            self.stage_log.write(
                f"{len(requests)} {len(batch)} " + " ".join(f"{s:.6f}" for s in stages) + "\n"
            )
        return responses

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        step = self.engine_batch or len(batch)
        if len(batch) <= step:
            return self.session.run(self.output_names, {self.input_name: batch})
        parts = [
            self.session.run(self.output_names, {self.input_name: batch[i : i + step]})
            for i in range(0, len(batch), step)
        ]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    def finalize(self) -> None:
        if self.stage_log is not None:
            self.stage_log.close()
        self.session = None
