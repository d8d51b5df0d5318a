"""Locust load test of a radserve model on Triton, over gRPC.

    locust -f loadtests/locustfile.py --headless --host 127.0.0.1:8001 --model demo \\
        --dicom build/demo-dicom --load-profile smoke \\
        --csv build/loadtest/locust --html build/loadtest/locust.html

Each user owns one gRPC channel (a ``tritonclient.grpc.InferenceServerClient``) and sends
radiographs preprocessed once by the client's own pipeline (input contract check → decode → display
LUT → resize, exactly as ``radserve classify`` does: files the model does not accept are left out),
cycled. Every request is reported through Locust's ``request`` event.

**gRPC and gevent.** Locust runs users as greenlets. gRPC's C core blocks the OS thread it is called
from, so a plain gRPC call freezes every user of the process; gRPC's own gevent integration
(``grpc.experimental.gevent.init_gevent()``) makes users concurrent but leaves the locust process
hanging after "Shutting down" (docs/how-to/benchmarks.md, "Load tests and benchmarks"). Here gRPC is
*not* patched for gevent: each call runs in
gevent's native thread pool (``hub.threadpool.apply``), which parks only the calling greenlet while a
real thread waits on gRPC (which releases the GIL). Users are concurrent, nothing of gRPC runs on the
gevent hub, and the process exits at the end of the run with the code set below.

Profiles (``--load-profile``, env ``RADSERVE_LOAD_PROFILE``): ``smoke`` (a few users for seconds),
``ramp`` (1 → 16 users in steps), ``soak`` (constant load for a long time), ``none`` (use ``-u``/``-t``).
Thresholds ``--max-failure-ratio`` and ``--max-p95-ms`` set the exit code: 0 pass, 1 fail.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import tritonclient.grpc as grpcclient
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from tritonclient.utils import InferenceServerException

from radserve.loadtests.images import wire_images
from radserve.model_card import INPUT_NAME, MODEL_CARD_PARAMETER, OUTPUT_NAME, ModelCard
from radserve.settings import SETTINGS
from radserve.transport import GRPC_ADMIN_KEY_HEADER, client_tls

LOGGER = logging.getLogger("radserve.locust")

# (seconds from start, users, spawn rate): the load holds each stage until its end time.
PROFILES: dict[str, list[tuple[float, int, float]]] = {
    "smoke": [(float(os.environ.get("RADSERVE_SMOKE_SECONDS", "10")), 4, 4.0)],
    "ramp": [(30.0, 1, 1.0), (60.0, 2, 1.0), (90.0, 4, 2.0), (120.0, 8, 4.0), (150.0, 16, 8.0)],
    "soak": [(float(os.environ.get("RADSERVE_SOAK_SECONDS", "1800")), 8, 2.0)],
}
MAX_USERS = 64  # gevent's native thread pool is sized for this many concurrent gRPC calls
# After a failed request a user pauses this long, as a client backs off: a server that is down
# (restarting in `make soak`) is not hammered by instant connection failures.
FAILURE_PAUSE_SECONDS = 0.5


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    group = parser.add_argument_group("radserve")
    group.add_argument("--model", default=os.environ.get("RADSERVE_MODEL", "demo"), help="model name")
    group.add_argument(
        "--dicom", default=os.environ.get("RADSERVE_DICOM", ""), help="folder of DICOM radiographs to send"
    )
    group.add_argument(
        "--load-profile",
        choices=("smoke", "ramp", "soak", "none"),
        default=os.environ.get("RADSERVE_LOAD_PROFILE", "smoke"),
        help="load shape",
    )
    group.add_argument("--max-failure-ratio", type=float, default=0.0, help="fail the run above this")
    group.add_argument("--max-p95-ms", type=float, default=2000.0, help="fail the run above this p95")
    # Locust's own --tls-cert/--tls-key serve its web UI: these are the gRPC client's.
    group.add_argument("--grpc-tls-ca", default="", help="CA certificate of the server: gRPC over TLS")
    group.add_argument("--grpc-tls-cert", default="", help="client certificate, for mutual TLS")
    group.add_argument("--grpc-tls-key", default="", help="client key, for mutual TLS")
    group.add_argument(
        "--admin-key", default=os.environ.get("RADSERVE_ADMIN_KEY", ""), help="for a restricted model config"
    )


def _grpc_target(host: str | None) -> str:
    host = host or SETTINGS.grpc_url
    for prefix in ("grpc://", "http://"):
        host = host.removeprefix(prefix)
    return host.rstrip("/")


def _tls(options: Any) -> dict[str, Any]:
    """tritonclient's TLS keyword arguments from ``--grpc-tls-ca [--grpc-tls-cert --grpc-tls-key]``."""
    paths = (options.grpc_tls_ca, options.grpc_tls_cert, options.grpc_tls_key)
    tls = client_tls(*(Path(path) if path else None for path in paths))
    return {"ssl": True, **tls.credentials()} if tls else {}


def _new_client(target: str, options: Any) -> grpcclient.InferenceServerClient:
    size = SETTINGS.client.grpc_max_message_bytes
    return grpcclient.InferenceServerClient(
        target,
        channel_args=[("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)],
        **_tls(options),
    )


_IMAGES: list[np.ndarray] = []
_READY_AT: list[float] = []  # monotonic time the radiographs were ready: the load profile's time 0


@events.test_start.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    """Fetch the model card from the server and preprocess the radiographs once per process."""
    gevent.get_hub().threadpool.maxsize = MAX_USERS
    if _IMAGES:
        return
    options = environment.parsed_options
    client = _new_client(_grpc_target(environment.host), options)
    try:
        headers = {GRPC_ADMIN_KEY_HEADER: options.admin_key} if options.admin_key else None
        config = client.get_model_config(options.model, headers=headers).config
        card = ModelCard.from_json(config.parameters[MODEL_CARD_PARAMETER].string_value)
    finally:
        client.close()
    _IMAGES.extend(wire_images(card, options.dicom))
    _READY_AT.append(time.monotonic())
    LOGGER.info("%d radiographs of %s ready to send to %s", len(_IMAGES), card.input_size, options.model)


class RadiographUser(User):
    """One radiograph classifier client: one gRPC channel, one request at a time."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.client = _new_client(_grpc_target(self.host), self.environment.parsed_options)
        self.model = self.environment.parsed_options.model
        offset = id(self) % len(_IMAGES)  # users start at different radiographs
        self.images = itertools.cycle(_IMAGES[offset:] + _IMAGES[:offset])
        self.output = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]

    def on_stop(self) -> None:
        self.client.close()

    def _infer(self, image: np.ndarray) -> Any:
        request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "UINT8")
        request.set_data_from_numpy(image)
        return self.client.infer(self.model, [request], outputs=self.output, client_timeout=60)

    @task
    def classify(self) -> None:
        image = next(self.images)
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            # gRPC blocks its OS thread: run it in gevent's native pool, parking only this greenlet.
            result = gevent.get_hub().threadpool.apply(self._infer, (image,))
            length = result.as_numpy(OUTPUT_NAME).nbytes
        except InferenceServerException as error:
            exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"infer {self.model}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=exception,
            context={},
        )
        if exception is not None:
            gevent.sleep(FAILURE_PAUSE_SECONDS)


class RadserveShape(LoadTestShape):
    """The load profile named by ``--load-profile``; ``none`` leaves users and run time to ``-u``/``-t``."""

    def tick(self) -> tuple[int, float] | None:
        profile = self.runner.environment.parsed_options.load_profile
        if profile == "none":
            options = self.runner.environment.parsed_options
            limit = options.run_time or float("inf")
            return (options.num_users or 1, options.spawn_rate or 1) if self.get_run_time() < limit else None
        # the profile's stages count from when the radiographs are ready (their preparation blocks
        # the first tick's start of the users; a 2 s smoke run under load could otherwise send nothing)
        elapsed = time.monotonic() - _READY_AT[0] if _READY_AT else 0.0
        for end, users, rate in PROFILES[profile]:
            if elapsed < end:
                return users, rate
        return None


@events.quitting.add_listener
def _verdict(environment: Environment, **_: Any) -> None:
    """Pass/fail on the aggregated stats: the process exit code."""
    options = environment.parsed_options
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) or 0.0
    reasons = []
    if total.num_requests == 0:
        reasons.append("no request was sent")
    if total.fail_ratio > options.max_failure_ratio:
        reasons.append(f"failure ratio {total.fail_ratio:.2%} > {options.max_failure_ratio:.2%}")
    if p95 > options.max_p95_ms:
        reasons.append(f"p95 {p95:.0f} ms > {options.max_p95_ms:.0f} ms")
    verdict = "FAIL: " + "; ".join(reasons) if reasons else "PASS"
    LOGGER.warning(
        "radserve load test %s: %d requests, %.1f req/s, failures %.2f%%, p50 %.0f ms, p95 %.0f ms",
        verdict,
        total.num_requests,
        total.total_rps,
        total.fail_ratio * 100,
        total.get_response_time_percentile(0.5) or 0.0,
        p95,
    )
    environment.process_exit_code = 1 if reasons else 0
