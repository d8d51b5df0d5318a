"""The raw engine's limit on this host: ONNX Runtime on the served model file, in every layout.

The served path runs one single-threaded ONNX Runtime session per core, each in its own process
(Triton's Python-backend stubs); a benchmark that measures only one session with all cores' threads
under-states the limit for small models, where one intra-op thread pool cannot keep the cores busy.
So the raw line is the best of the layouts of :func:`layouts`:

- ``1xN``: one process, one session with N intra-op threads (N = cores);
- ``Nx1``: N processes, one single-threaded session each, running at the same time (summed img/s).

Each layout runs in worker processes (spawned, so nothing of this process is shared) at every batch
size, fed the served path's own wire images, with the served path's warm-up before each run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from radserve.loadtests.points import REPEATS, Point, Run, interleaved, timed_run, warm_up_seconds
from radserve.model_card import INPUT_NAME, OUTPUT_NAME

BATCHES = (1, 2, 4, 8, 16, 32)
_START_MARGIN_SECONDS = 0.05  # workers start measuring together, this long after the command
_ANSWER_SECONDS = 600  # at most, for a worker to load its session or finish a run


ENGINES = ("onnxruntime", "openvino", "openvino-bf16")  # openvino: f32 inference precision


@dataclass(frozen=True)
class Layout:
    """``processes`` concurrent engine sessions of ``threads`` intra-op threads each."""

    processes: int
    threads: int

    def __str__(self) -> str:
        return f"{self.processes}x{self.threads}"


def layouts(cores: int) -> tuple[Layout, ...]:
    """One session on every core's threads, and one single-threaded session per core (the same on 1 core)."""
    return tuple(dict.fromkeys((Layout(1, cores), Layout(cores, 1))))


def batch_feeds(images: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    """``uint8 [batch, 1, H, W]`` tensors made of the wire images in turn, covering each at least once."""
    count = len(images)
    starts = range(0, max(count, batch), batch) if batch <= count else (0,)
    return [
        np.ascontiguousarray(np.concatenate([images[(start + j) % count] for j in range(batch)]))
        for start in starts
    ]


class OpenVinoSession:
    """OpenVINO's CPU plugin on an ONNX file, behind ONNX Runtime's ``run(outputs, feed)`` call.

    One stream (one infer request at a time, as one ONNX Runtime session) of ``threads`` threads;
    ``precision`` is OpenVINO's inference precision hint: ``f32``, or ``bf16`` where the CPU has it
    (AVX512-BF16 or AMX; OpenVINO's own default on such CPUs).
    """

    def __init__(self, onnx_path: str | Path, threads: int, precision: str) -> None:
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self._compiled = core.compile_model(str(onnx_path), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._output = self._compiled.output(OUTPUT_NAME)

    def run(self, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer({INPUT_NAME: feed[INPUT_NAME]})
        return [np.asarray(result[self._output])]


def cpu_session(onnx_path: str | Path, threads: int, engine: str = "onnxruntime"):  # type: ignore[no-untyped-def]
    """A session configured as the embedded model configures its own (export/embedded_model.py), or an
    OpenVINO session with the same call (``engine``: one of :data:`ENGINES`)."""
    if engine.startswith("openvino"):
        return OpenVinoSession(onnx_path, threads, "bf16" if engine.endswith("bf16") else "f32")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _run_for(session, feeds: list[np.ndarray], until: float) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    index = 0
    finished = time.monotonic()
    while finished < until or not latencies:
        sent = time.monotonic()
        session.run([OUTPUT_NAME], {INPUT_NAME: feeds[index % len(feeds)]})
        finished = time.monotonic()
        latencies.append(finished - sent)
        index += 1
    return latencies, finished


def _worker(
    connection: Connection, onnx_path: str, threads: int, images: list[np.ndarray], engine: str
) -> None:
    """Serve ``(command, batch, seconds[, start])`` messages: ``warm`` answers when warm, ``run``
    measures from ``start`` (time.monotonic, shared by the processes) and answers (latencies, start, end)."""
    session = cpu_session(onnx_path, threads, engine)
    connection.send("ready")
    feeds: dict[int, list[np.ndarray]] = {}
    while (message := connection.recv()) is not None:
        command, batch, seconds, *start = message
        batch_feed = feeds.setdefault(batch, batch_feeds(images, batch))
        if command == "warm":
            _run_for(session, batch_feed, time.monotonic() + seconds)
            connection.send("warm")
            continue
        time.sleep(max(0.0, start[0] - time.monotonic()))
        cpu = time.process_time()  # every thread of this process: the engine's CPU cost
        latencies, finished = _run_for(session, batch_feed, start[0] + seconds)
        connection.send((latencies, start[0], finished, time.process_time() - cpu))


class LayoutWorkers:
    """The worker processes of one layout, alive across batches and repetitions."""

    def __init__(
        self, layout: Layout, onnx_path: Path, images: Sequence[np.ndarray], engine: str = "onnxruntime"
    ) -> None:
        self.layout = layout
        self.engine = engine
        context = multiprocessing.get_context("spawn")
        self._connections: list[Connection] = []
        self._processes = []
        for _ in range(layout.processes):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker,
                args=(child, str(onnx_path), layout.threads, list(images), engine),
                daemon=True,
            )
            process.start()
            self._connections.append(parent)
            self._processes.append(process)
        self._gather()  # every session loaded

    def _gather(self) -> list[object]:
        answers = []
        for connection, process in zip(self._connections, self._processes, strict=True):
            waited = 0
            while not connection.poll(1):  # a worker that died (its engine failed to load) ends the wait
                waited += 1
                if not process.is_alive() or waited >= _ANSWER_SECONDS:
                    state = f"exited with {process.exitcode}" if not process.is_alive() else "did not answer"
                    raise RuntimeError(
                        f"raw engine worker {process.pid} ({self.layout}, {self.engine}) {state}"
                    )
            answers.append(connection.recv())
        return answers

    def measure(self, batch: int, seconds: float) -> Run:
        """Warm every process at ``batch``, then measure them together for ``seconds``; summed img/s."""
        for connection in self._connections:
            connection.send(("warm", batch, warm_up_seconds(seconds)))
        self._gather()
        start = time.monotonic() + _START_MARGIN_SECONDS
        for connection in self._connections:
            connection.send(("run", batch, seconds, start))
        answers = self._gather()
        latencies = [latency for worker_latencies, *_ in answers for latency in worker_latencies]  # type: ignore[misc]
        # each process's rate over its own window; the processes ran over the same window
        rate = sum(len(lat) * batch / (end - begin) for lat, begin, end, _ in answers)  # type: ignore[misc]
        images = len(latencies) * batch
        run = timed_run(latencies, images, images / rate)
        run.extra["processes"] = self.layout.processes
        cpu = sum(seconds for *_, seconds in answers)  # type: ignore[misc]
        run.extra["cpu_ms_per_image"] = {"engine": round(1000 * cpu / images, 3)}
        return run

    def close(self) -> None:
        for connection in self._connections:
            connection.send(None)
        for process in self._processes:
            process.join(timeout=30)

    def __enter__(self) -> LayoutWorkers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def measure_raw(
    onnx_path: Path,
    images: Sequence[np.ndarray],
    seconds: float,
    batches: Sequence[int] = BATCHES,
    cores: int | None = None,
    repeats: int = REPEATS,
    engine: str = "onnxruntime",
) -> list[Point]:
    """Every layout of :func:`layouts` at every batch size, ``repeats`` interleaved runs each, on
    ``engine`` (one of :data:`ENGINES`)."""
    return measure_engines([(onnx_path, engine)], images, seconds, batches, cores, repeats)[0]


def measure_engines(
    models: Sequence[tuple[Path, str]],
    images: Sequence[np.ndarray],
    seconds: float,
    batches: Sequence[int] = BATCHES,
    cores: int | None = None,
    repeats: int = REPEATS,
) -> list[list[Point]]:
    """:func:`measure_raw` of several ``(model file, engine)`` pairs, their runs interleaved round by
    round (so that their ratios come from the same load); the points of each pair, in order."""
    tried = layouts(cores or os.cpu_count() or 1)
    workers: list[LayoutWorkers] = []
    try:
        for onnx_path, engine in models:
            for layout in tried:
                workers.append(LayoutWorkers(layout, onnx_path, images, engine))
        configs = [(layout_workers, batch) for layout_workers in workers for batch in batches]
        runs = interleaved(configs, lambda config: config[0].measure(config[1], seconds), repeats)
    finally:
        for layout_workers in workers:
            layout_workers.close()
    points = [
        Point("raw", layout_workers.layout.processes, batch, point_runs, layout=str(layout_workers.layout))
        for (layout_workers, batch), point_runs in zip(configs, runs, strict=True)
    ]
    per_model = len(tried) * len(batches)
    return [points[index : index + per_model] for index in range(0, len(points), per_model)]
