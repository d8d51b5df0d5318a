"""Triton Python-backend BLS model: a first-stage classifier routes each radiograph downstream.

``radserve export-router`` copies this file as ``<router>/<version>/model.py``; it imports nothing
from radserve. The routing description (config parameter ``radserve.router``, see
:mod:`radserve.routing`) names the first stage, the downstream models, the version of each (every
BLS request is pinned to it) and the routing table. Each call receives one dynamic batch: its
requests' radiographs go to the first stage in one BLS request, then each downstream model gets one
BLS request with the radiographs routed to it, each in its own wire contract's tensor.

A downstream request that fails is retried one radiograph at a time, so a failure is reported
(``route_error``) for the radiographs it concerns only; a first-stage failure fails the requests.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

PROBABILITIES = "probabilities"


class TritonPythonModel:
    """Routes by the first stage's top label."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        router = json.loads(config["parameters"]["radserve.router"]["string_value"])
        if int(np.__version__.split(".")[0]) >= 2:
            # the 2.51 stub's ndarray tensors (this model's BYTES output and BLS requests) are wrong under
            # numpy 2 (docs/how-to/serve-cpu.md, "numpy 2"): refuse to load rather than answer garbage
            raise pb_utils.TritonModelException(
                f"router {router['name']!r}: needs numpy < 2 in tritonserver's Python, found {np.__version__}"
            )
        self.first = router["first"]
        self.downstream = router["downstream"]
        names = [stage["model"] for stage in self.downstream]
        labels = self.first["card"]["labels"]
        unknown = sorted(set(router["routes"]) - set(labels))
        if unknown or not set(router["routes"].values()) <= set(names):
            raise pb_utils.TritonModelException(
                f"router {router['name']!r}: routes {router['routes']} do not fit the first stage's labels "
                f"{labels} and the downstream models {names}"
            )
        # first-stage class index -> downstream index (-1: unrouted)
        self.route = np.array(
            [names.index(router["routes"][label]) if label in router["routes"] else -1 for label in labels],
            dtype=np.int32,
        )
        self.width = next(o["dims"][0] for o in config["output"] if o["name"] == PROBABILITIES)
        self.inputs = [i["name"] for i in config["input"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            for request in requests
        ]
        stacked: dict[str, np.ndarray] = {}

        def batch(name: str) -> np.ndarray:
            """The requests' tensors of input ``name`` as one batch, stacked when first needed."""
            if name not in stacked:
                parts = [a[name] for a in arrays]
                stacked[name] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            return stacked[name]

        try:
            first = _infer(self.first, batch(self.first["input"]))
        except RuntimeError as error:
            failure = pb_utils.TritonError(f"first stage {self.first['model']!r} failed: {error}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        routed = self.route[np.argmax(first, axis=1)]
        probabilities = np.full((len(first), self.width), np.nan, dtype=np.float32)
        errors = np.full(len(first), "", dtype=object)
        for index, stage in enumerate(self.downstream):
            rows = np.flatnonzero(routed == index)
            if len(rows):
                self._downstream(stage, batch(stage["input"]), rows, probabilities, errors)
        responses, start = [], 0
        for array in arrays:
            end = start + len(array[self.inputs[0]])
            part = slice(start, end)
            tensors = [
                pb_utils.Tensor(PROBABILITIES, np.ascontiguousarray(probabilities[part])),
                pb_utils.Tensor("first_probabilities", np.ascontiguousarray(first[part])),
                pb_utils.Tensor("downstream", np.ascontiguousarray(routed[part, None])),
                pb_utils.Tensor(
                    "route_error", np.array([[e.encode()] for e in errors[part]], dtype=np.object_)
                ),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses

    @staticmethod
    def _downstream(
        stage: dict[str, Any], images: np.ndarray, rows: np.ndarray, out: np.ndarray, errors: np.ndarray
    ) -> None:
        """Answers of ``stage`` for ``rows`` into ``out``; a failed request is retried one radiograph
        at a time, and a radiograph that still fails gets its reason in ``errors``."""
        groups = [rows]
        while groups:
            group = groups.pop()
            try:
                answer = _infer(stage, images[group])
            except RuntimeError as error:
                if len(group) > 1:
                    groups.extend(group[i : i + 1] for i in range(len(group)))
                else:
                    errors[group] = (
                        f"downstream {stage['model']!r} version {stage['version']} failed: {error}"
                    )
                continue
            out[group, : answer.shape[1]] = answer


def _infer(stage: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """``probabilities`` of ``stage`` (its pinned version) for wire images; RuntimeError on failure."""
    request = pb_utils.InferenceRequest(
        model_name=stage["model"],
        model_version=int(stage["version"]) if stage["version"] else -1,
        requested_output_names=[PROBABILITIES],
        inputs=[pb_utils.Tensor("image", np.ascontiguousarray(images))],
    )
    response = request.exec()
    if response.has_error():
        error = response.error()
        try:
            message = error.message()
        except UnicodeDecodeError:  # seen here with tritonserver 2.51: the message's bytes were not text
            message = "the model answered with an error whose message could not be read"
        raise RuntimeError(message)
    answer = pb_utils.get_output_tensor_by_name(response, PROBABILITIES)
    if answer is None or len(answer.as_numpy()) != len(images):
        raise RuntimeError(f"answered without {PROBABILITIES} for each of its {len(images)} radiograph(s)")
    return answer.as_numpy()
