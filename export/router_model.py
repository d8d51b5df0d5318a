"""Triton Python-backend BLS model: a first-stage classifier routes each radiograph downstream.

``radserve export-router`` copies this file as ``<router>/<version>/model.py``; it imports nothing
from radserve. The routing description (config parameter ``radserve.router``, see
:mod:`radserve.routing`) names the first stage, the downstream models, the version of each (every
BLS request is pinned to it) and the routing table. Each call receives one dynamic batch: its
requests' radiographs go to the first stage in one BLS request, then each downstream model gets one
BLS request with the radiographs routed to it, each in its own wire contract's tensor.

A downstream request that fails is retried one radiograph at a time, so a failure is reported
(``route_error``) for the radiographs it concerns only; a first-stage failure fails the requests.

``execute`` is a coroutine and every BLS request goes out with ``async_exec`` (Triton's
python_backend README, 'Business Logic Scripting', 'Asynchronous BLS' and 'Async Execute'): while
one batch waits for its stages the instance takes the next batch, and the downstream models of a
batch are asked concurrently. Tensors are read through DLPack (numpy's ``from_dlpack``), not
``as_numpy``; they are written through the numpy bridge (see :func:`_tensor`).
"""

from __future__ import annotations

import asyncio
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

    async def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [
            {name: _numpy(pb_utils.get_input_tensor_by_name(request, name)) for name in self.inputs}
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
            first = await _infer(self.first, batch(self.first["input"]))
        except RuntimeError as error:
            failure = pb_utils.TritonError(f"first stage {self.first['model']!r} failed: {error}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        routed = self.route[np.argmax(first, axis=1)]
        probabilities = np.full((len(first), self.width), np.nan, dtype=np.float32)
        errors = np.full(len(first), "", dtype=object)
        asked = []
        for index, stage in enumerate(self.downstream):
            rows = np.flatnonzero(routed == index)
            if len(rows):
                asked.append(self._downstream(stage, batch(stage["input"]), rows, probabilities, errors))
        await asyncio.gather(*asked)
        responses, start = [], 0
        for array in arrays:
            end = start + len(array[self.inputs[0]])
            part = slice(start, end)
            tensors = [
                _tensor(PROBABILITIES, probabilities[part]),
                _tensor("first_probabilities", first[part]),
                _tensor("downstream", routed[part, None]),
                pb_utils.Tensor(
                    "route_error", np.array([[e.encode()] for e in errors[part]], dtype=np.object_)
                ),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses

    @staticmethod
    async def _downstream(
        stage: dict[str, Any], images: np.ndarray, rows: np.ndarray, out: np.ndarray, errors: np.ndarray
    ) -> None:
        """Answers of ``stage`` for ``rows`` into ``out``; a failed request is retried one radiograph
        at a time, and a radiograph that still fails gets its reason in ``errors``."""
        groups = [rows]
        while groups:
            group = groups.pop()
            try:
                answer = await _infer(stage, images[group])
            except RuntimeError as error:
                if len(group) > 1:
                    groups.extend(group[i : i + 1] for i in range(len(group)))
                else:
                    errors[group] = (
                        f"downstream {stage['model']!r} version {stage['version']} failed: {error}"
                    )
                continue
            out[group, : answer.shape[1]] = answer


def _numpy(tensor: Any) -> np.ndarray:
    """A CPU tensor of the stub as a numpy array, through DLPack."""
    return np.from_dlpack(tensor)


def _tensor(name: str, array: np.ndarray) -> Any:
    """A numeric output or BLS input tensor. Not through numpy's DLPack export: the 2.51 stub renames
    the capsule it takes ("used_dlpack") and numpy 1.26's deleter then fails on every tensor (seen
    here); torch's export works, but the router must not need torch in the serving image."""
    return pb_utils.Tensor(name, np.ascontiguousarray(array))


async def _infer(stage: dict[str, Any], images: np.ndarray) -> np.ndarray:
    """``probabilities`` of ``stage`` (its pinned version) for wire images; RuntimeError on failure."""
    request = pb_utils.InferenceRequest(
        model_name=stage["model"],
        model_version=int(stage["version"]) if stage["version"] else -1,
        requested_output_names=[PROBABILITIES],
        inputs=[_tensor("image", images)],
    )
    response = await request.async_exec()
    if response.has_error():
        error = response.error()
        try:
            message = error.message()
        except UnicodeDecodeError:  # seen here with tritonserver 2.51: the message's bytes were not text
            message = "the model answered with an error whose message could not be read"
        raise RuntimeError(message)
    answer = pb_utils.get_output_tensor_by_name(response, PROBABILITIES)
    values = None if answer is None else _numpy(answer)
    if values is None or len(values) != len(images):
        raise RuntimeError(f"answered without {PROBABILITIES} for each of its {len(images)} radiograph(s)")
    return values
