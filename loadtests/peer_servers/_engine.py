"""The engine every peer server runs: ONNX Runtime sessions over the served ``model.onnx``.

Standalone (numpy and onnxruntime only): the peer servers run in their own virtual environments,
without radserve. ``sessions`` single-purpose sessions of ``threads`` intra-op threads each, as
radserve's embedded target lays them out (one instance per core, or one with all threads); a
session is taken per call, so calls from several threads run side by side (ONNX Runtime releases
the GIL while it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class Engine:
    """``run(images)``: ``uint8 [B, C, H, W]`` in, ``float32 [B, classes]`` probabilities out."""

    def __init__(self, onnx_path: str, sessions: int, threads: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        self._idle: queue.Queue[onnxruntime.InferenceSession] = queue.Queue()
        for _ in range(sessions):
            self._idle.put(
                onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
            )
        self._pool = ThreadPoolExecutor(sessions, thread_name_prefix="engine")

    def run(self, images: np.ndarray) -> np.ndarray:
        session = self._idle.get()
        try:
            return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})[0]
        finally:
            self._idle.put(session)

    async def arun(self, images: np.ndarray) -> np.ndarray:
        """:meth:`run` off the event loop (an async server keeps accepting while the engine works)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.run, images)


def split(probabilities: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """A batch's rows back to the requests of ``sizes`` radiographs that formed it."""
    return np.split(probabilities, np.cumsum(sizes)[:-1])


def arguments(description: str) -> argparse.Namespace:
    """The options every peer server takes (parsed with ``parse_known_args``: some peers read argv too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8, help="the peer's batching: largest batch")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the peer's batching: longest wait")
    parser.add_argument("--shape", type=int, nargs="+", help="one radiograph's C H W, for peers that need it")
    return parser.parse_known_args()[0]
