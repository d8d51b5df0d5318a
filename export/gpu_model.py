"""Triton Python-backend model running a torchvision network on CUDA with PyTorch (``embedded-gpu``).

Export copies this file as ``<model>/<version>/model.py`` beside ``weights.pt`` (the network's
``state_dict``, plain tensors: readable by other PyTorch versions, unlike TorchScript archives) and
``model_card.json`` (architecture, labels, input size, mean/std, temperature, precision). It imports
nothing from radserve so that the model folder is self-contained; radserve imports it as
``radserve.export.gpu_model`` for the parity gate and the raw benchmark (the same code path).

Per instance: the network is rebuilt with torchvision, cast to the card's precision (fp16 or fp32) in
``channels_last``; normalisation, channel replication and the temperature-scaled softmax run in
float32 around it. Every batch is padded to the next of a few fixed sizes (the config's
``padded_batch_sizes``) so cuDNN never re-tunes, staged through one pinned host buffer, and replayed
as the CUDA graph captured for that size at initialize.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton: the parity gate, the raw benchmark, tests
    pb_utils = None

WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.json"
_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def padded_size(count: int, sizes: Sequence[int]) -> int:
    """The smallest of ``sizes`` holding ``count`` radiographs (ValueError beyond the largest)."""
    for size in sorted(sizes):
        if size >= count:
            return size
    raise ValueError(f"batch of {count} exceeds the largest padded size {max(sizes)}")


class ServingNetwork(torch.nn.Module):
    """``uint8 [B, 1, H, W]`` → float32 normalised RGB → network (``dtype``) → float32 softmax."""

    def __init__(
        self,
        network: torch.nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        temperature: float,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.network = network.to(dtype=dtype, memory_format=torch.channels_last).eval()
        self.dtype = dtype
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0))
        self.inverse_temperature = 1.0 / temperature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = (image.to(torch.float32).expand(-1, 3, -1, -1) - self.mean) * self.scale
        pixels = pixels.to(self.dtype).contiguous(memory_format=torch.channels_last)
        logits = self.network(pixels).to(torch.float32)
        return torch.softmax(logits * self.inverse_temperature, dim=1)


def build_serving_network(
    card: dict[str, Any], state_dict: dict[str, torch.Tensor], device: torch.device
) -> ServingNetwork:
    """The card's torchvision architecture with ``state_dict``, on ``device`` in the card's precision."""
    import torchvision

    network = torchvision.models.get_model(
        card["architecture"], weights=None, num_classes=len(card["labels"])
    )
    network.load_state_dict(state_dict)
    precision = card.get("precision", "fp32")
    if precision not in _DTYPES:
        raise ValueError(f"embedded-gpu runs fp16 or fp32 networks, the card says {precision!r}")
    serving = ServingNetwork(
        network, card["mean"], card["std"], float(card.get("temperature", 1.0)), _DTYPES[precision]
    )
    return serving.to(device).eval()


class GraphRunner:
    """Runs a :class:`ServingNetwork` on padded fixed shapes.

    On CUDA: one pinned host staging buffer, one device input buffer, and one CUDA graph per padded
    size (captured largest first, sharing one memory pool). Elsewhere (tests): the same padding and
    staging, run eagerly.
    """

    def __init__(
        self,
        module: ServingNetwork,
        input_size: Sequence[int],
        classes: int,
        sizes: Sequence[int],
        device: torch.device,
    ) -> None:
        self.module = module
        self.sizes = tuple(sorted(set(sizes)))
        self.largest = self.sizes[-1]
        self.device = device
        cuda = device.type == "cuda"
        shape = (self.largest, 1, *input_size)
        self.staging = torch.zeros(shape, dtype=torch.uint8, pin_memory=cuda)
        self._staging_np = self.staging.numpy()
        self.device_input = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.host_output = torch.zeros((self.largest, classes), dtype=torch.float32, pin_memory=cuda)
        self._host_output_np = self.host_output.numpy()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if cuda:
            self._capture()

    @torch.inference_mode()
    def _capture(self) -> None:
        torch.backends.cudnn.benchmark = True  # fixed shapes: tuned once per padded size
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 networks keep their parity figures
        torch.backends.cudnn.allow_tf32 = False
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for size in self.sizes:
                for _ in range(2):
                    self.module(self.device_input[:size])
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = self.module(self.device_input[:size])
            self.graphs[size] = (graph, output)
        torch.cuda.synchronize(self.device)

    def infer(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities ``float32 [N, C]`` for the concatenation of ``uint8 [n_i, 1, H, W]`` arrays."""
        total = sum(len(array) for array in arrays)
        result = np.empty((total, self.host_output.shape[1]), dtype=np.float32)
        filled = done = 0
        for array in arrays:
            start = 0
            while start < len(array):
                take = min(len(array) - start, self.largest - filled)
                self._staging_np[filled : filled + take] = array[start : start + take]
                filled, start = filled + take, start + take
                if filled == self.largest:
                    result[done : done + filled] = self._run(filled)
                    done, filled = done + filled, 0
        if filled:
            result[done : done + filled] = self._run(filled)
        return result

    @torch.inference_mode()
    def _run(self, count: int) -> np.ndarray:
        size = padded_size(count, self.sizes)
        self.device_input[:size].copy_(self.staging[:size], non_blocking=True)
        if self.graphs:
            graph, output = self.graphs[size]
            graph.replay()
        else:
            output = self.module(self.device_input[:size])
        self.host_output[:count].copy_(output[:count], non_blocking=True)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return self._host_output_np[:count]


def load_runner(
    folder: str, sizes: Sequence[int], device: torch.device, weights: str = WEIGHTS_FILE
) -> GraphRunner:
    """A :class:`GraphRunner` for the version folder ``folder`` (card + weights) on ``device``."""
    with open(os.path.join(folder, CARD_FILE)) as handle:
        card = json.load(handle)
    state_dict = torch.load(os.path.join(folder, weights), map_location="cpu", weights_only=True)
    module = build_serving_network(card, state_dict, device)
    return GraphRunner(module, card["input_size"], len(card["labels"]), sizes, device)


def select_device(kind: str, device_id: str, name: str) -> torch.device:
    """The CUDA device Triton placed this instance on; one clear line where there is none."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"embedded-gpu model {name!r} needs a CUDA GPU, and PyTorch {torch.__version__} sees none on "
            "this host: serve it on a GPU host, or export it with --target embedded for the CPU"
        )
    return torch.device("cuda", int(device_id) if kind == "GPU" else 0)


class TritonPythonModel:
    """Serves the network of this version folder on the instance's GPU."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        kind, device_id = args.get("model_instance_kind", "GPU"), args.get("model_instance_device_id", "0")
        device = select_device(kind, device_id, args["model_name"])
        torch.cuda.set_device(device)
        sizes = [int(size) for size in parameters["padded_batch_sizes"].split(",")]
        folder = os.path.join(args["model_repository"], args["model_version"])
        self.runner = load_runner(folder, sizes, device, parameters.get("weights_filename", WEIGHTS_FILE))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests: list[Any]) -> list[Any]:
        # DLPack both ways: the 2.51 stub's numpy bridge is not reliable under numpy 2 (see below)
        images = [
            torch.utils.dlpack.from_dlpack(
                pb_utils.get_input_tensor_by_name(request, self.input_name).to_dlpack()
            ).numpy()
            for request in requests
        ]
        try:
            probabilities = self.runner.infer(images)
        except Exception as error:  # one bad batch must answer every request, not kill the model
            failure = pb_utils.TritonError(f"inference failed: {error}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        sizes = [len(image) for image in images]
        responses = []
        for part in np.split(probabilities, np.cumsum(sizes)[:-1]):
            # through DLPack, not pb_utils.Tensor(name, ndarray): under numpy 2 (the GPU host's Python
            # 3.12) the 2.51 stub sends a numpy-built output with its shape but without its bytes
            data = torch.from_numpy(np.ascontiguousarray(part))
            tensor = pb_utils.Tensor.from_dlpack(self.output_name, torch.utils.dlpack.to_dlpack(data))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        self.runner = None
