"""Lifecycle of the real ``tritonserver``: locate, configure, start, wait until ready, stop.

The embedded default is the binary bundled in the ``nvidia-pytriton`` wheel (Triton 2.51, Python
backend only). Its Python backend needs a backend folder holding ``libtriton_python.so``,
``triton_python_backend_utils.py`` and the stub built for the running Python, the interpreter's
libdir plus the wheel's ``nvidia_pytriton.libs`` on ``LD_LIBRARY_PATH``, and this environment's
``bin`` first on ``PATH`` so that the stub imports this environment's packages.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from radserve.errors import ServerError
from radserve.files import swap_folder
from radserve.server_config.serving_view import build_model_view, build_serving_view, repository_needs
from radserve.server_config.triton_security import LOOPBACK, ServerTls, restricted_arguments
from radserve.settings import SETTINGS, Ports
from radserve.transport import ADMIN_KEY_HEADER, redact

LOGGER = logging.getLogger(__name__)

_STOP_TIMEOUT_SECONDS = SETTINGS.server.stop_timeout_seconds
# quantile:allowed error of the nv_inference_*_summary_us series.
TRITON_SUMMARY_QUANTILES = "0.5:0.05,0.9:0.01,0.95:0.005,0.99:0.001"


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "the embedded tritonserver comes from the nvidia-pytriton wheel, which is not "
            "installed: pip install 'radserve[server]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_triton_binary() -> Path:
    """Path of the ``tritonserver`` binary bundled in the nvidia-pytriton wheel."""
    binary = _pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServerError(f"tritonserver binary not found at {binary}")
    return binary


def _embedded_python_backend(into: Path) -> Path:
    """Assemble a backend folder for Triton's Python backend with the stub of this Python."""
    root = _pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    python_backend = into / "python"
    python_backend.mkdir(parents=True)
    for source in root.joinpath("backends", "python").iterdir():
        if source.is_file():
            (python_backend / source.name).symlink_to(source)
    (python_backend / stub.name).symlink_to(stub)
    return into


def _embedded_environment() -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(sysconfig.get_config_var("LIBDIR")), str(_pytriton_root().parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


# Errors tritonserver logs on every CPU-only host; they say nothing about the failure at hand.
_HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "DCGM")


# Lines after which tritonserver never becomes ready; with a broken Python model it may not exit
# either (the stub fails before the backend reports back), so the start fails at once on them.
_FATAL_MARKERS = ("Failed to preinitialize Python stub", "failed to load")


def _is_harmless(line: str) -> bool:
    return any(marker in line for marker in _HARMLESS_ERRORS)


def check_port_free(host: str, port: int, name: str) -> None:
    """Raise :class:`ServerError` if ``port`` cannot be bound on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do, so that connections of a previous server in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise ServerError(f"{name} port {port} on {host} is not available: {error.strerror}") from None


def free_ports(host: str = "127.0.0.1") -> Ports:
    """Three ports free right now on ``host`` (for tests and throwaway servers)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        http, grpc, metrics = (sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    return Ports(http=http, grpc=grpc, metrics=metrics)


def require_models(repository: Path) -> None:
    """Raise :class:`ServerError` unless ``repository`` holds at least one model with a config."""
    if not repository.is_dir():
        raise ServerError(f"model repository {repository} does not exist or is not a folder")
    if not any(path.is_file() for path in repository.glob("*/config.pbtxt")):
        raise ServerError(
            f"model repository {repository} holds no model (no <model>/config.pbtxt); "
            "build one with 'radserve export'"
        )


def _private_log(server: TritonServer) -> object:
    """Open the server's log for writing, readable by this user only (it may quote request data).

    Without a ``log_file``, the log goes to a fresh private folder (0700, unpredictable name) that
    outlives the server so that its log can be read after a failure.
    """
    if server.log_file is None:
        server.log_file = Path(tempfile.mkdtemp(prefix="radserve-log-")) / "tritonserver.log"
    descriptor = os.open(server.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    return os.fdopen(descriptor, "wb")


@dataclass
class TritonServer:
    """One ``tritonserver`` process serving a model repository.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    repository: Path
    host: str = SETTINGS.host
    ports: Ports = field(default_factory=lambda: SETTINGS.ports)
    binary: Path | None = None
    log_file: Path | None = None
    verbose: int = 0
    tls: ServerTls | None = None  # TLS (mutual with a client CA) on gRPC; HTTP and metrics on loopback
    admin_key: str | None = None  # restricted API groups behind this key (radserve.transport)
    model_control: Literal["none", "explicit"] = "none"  # explicit: reload() serves new publications
    # tritonserver's options as written elsewhere (a Kubernetes manifest's), in place of those derived
    # above; the backend folder is still this server's, and so is the repository unless they name
    # object storage.
    arguments: tuple[str, ...] = ()
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)
    _log_handle: object | None = field(default=None, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def plaintext_host(self) -> str:
        """Where the plaintext HTTP and metrics endpoints listen: loopback when gRPC has TLS."""
        return LOOPBACK if self.tls is not None else self.host

    @property
    def http_url(self) -> str:
        return f"http://{self.plaintext_host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.plaintext_host}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self, backend_directory: Path, repository: Path | None = None) -> list[str]:
        """The tritonserver command line (serving ``repository``, by default the configured one)."""
        binary = self.binary or embedded_triton_binary()
        repository_path = (repository or self.repository).resolve()
        needs = repository_needs(repository_path)
        served = [
            f"--model-repository={repository_path}",
            f"--backend-directory={backend_directory}",
        ]
        if self.arguments:  # their repository when it is object storage (s3://, gs://, as://)
            remote = any(o.startswith("--model-repository=") and "://" in o for o in self.arguments)
            given = [o for o in self.arguments if remote or not o.startswith("--model-repository=")]
            return [str(binary), *served[remote:], *given]
        return [
            str(binary),
            *served,
            f"--http-address={self.plaintext_host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.plaintext_host}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            f"--allow-gpu-metrics={str(needs.gpu).lower()}",
            "--allow-cpu-metrics=true",
            # Triton 2.51 knows counter_latencies, summary_latencies and summary_quantiles (no
            # histogram_latencies: it is accepted and ignored). Summaries give per-model p50/p95/p99
            # of request, queue and compute time, over a sliding window (docs/reference/metrics.md).
            "--metrics-config=counter_latencies=true",
            "--metrics-config=summary_latencies=true",
            f"--metrics-config=summary_quantiles={TRITON_SUMMARY_QUANTILES}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={int(_STOP_TIMEOUT_SECONDS)}",
            f"--log-verbose={self.verbose}",
            *needs.backend_arguments(),
            *(self.tls.arguments() if self.tls else []),
            *(restricted_arguments(self.admin_key) if self.admin_key else []),
            *(
                ["--model-control-mode=explicit", "--load-model=*"]
                if self.model_control == "explicit"
                else []
            ),
        ]

    def start(self, timeout: float = SETTINGS.server.ready_timeout_seconds) -> TritonServer:
        """Start the server and block until it reports ready; raise :class:`ServerError` if not."""
        if self._process is not None:
            raise ServerError("server already started")
        require_models(self.repository)
        if self.binary is not None and not self.binary.is_file():
            raise ServerError(f"tritonserver binary not found at {self.binary}")
        for name, host, port in (
            ("HTTP", self.plaintext_host, self.ports.http),
            ("gRPC", self.host, self.ports.grpc),
            ("metrics", self.plaintext_host, self.ports.metrics),
        ):
            check_port_free(host, port, name)
        self._workdir = tempfile.TemporaryDirectory(prefix="radserve-triton-")
        workdir = Path(self._workdir.name)
        backends = _embedded_python_backend(workdir / "backends")
        view = build_serving_view(self.repository, workdir / "repository")
        self._log_handle = _private_log(self)
        command = self.command(backends, view)
        LOGGER.info("starting %s", redact(" ".join(command), self.admin_key))
        self._process = subprocess.Popen(
            command,
            env=_embedded_environment(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def reload(self, model: str) -> None:
        """Serve the repository's current publication of ``model`` (``model_control="explicit"``).

        The model's view is rebuilt beside the old one and exchanged with it atomically, then
        tritonserver loads it: versions it still serves keep answering meanwhile.
        """
        if self.model_control != "explicit" or self._workdir is None:
            raise ServerError("reload needs a started server with model_control='explicit'")
        view = Path(self._workdir.name) / "repository"
        for attempt in range(5):
            staged = Path(tempfile.mkdtemp(prefix=f".next-{model}-", dir=view))
            staged.rmdir()
            try:
                build_model_view(self.repository.resolve() / model, staged)
                break
            except FileNotFoundError:  # an export replaced the model folder meanwhile: read it again
                shutil.rmtree(staged, ignore_errors=True)
                if attempt == 4:
                    raise
        swap_folder(staged, view / model)
        headers = {ADMIN_KEY_HEADER: self.admin_key} if self.admin_key else {}
        url = f"{self.http_url}/v2/repository/models/{model}/load"
        request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=SETTINGS.server.ready_timeout_seconds):
                pass
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ServerError(f"tritonserver could not reload {model!r}: {detail}") from None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def is_ready(self) -> bool:
        """Whether the server answers ready on its health endpoint and serves its metrics.

        tritonserver opens its endpoints one after the other, metrics after HTTP and gRPC, so
        health alone can answer before the metrics port listens.
        """
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                if reply.status != 200:
                    return False
            with socket.create_connection((self.plaintext_host, self.ports.metrics), timeout=2):
                return True
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise ServerError(
                    f"tritonserver exited with code {code} before it was ready:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            fatal = self._fatal_log_lines()
            if fatal:
                raise ServerError(f"tritonserver cannot load the repository {self.repository}:\n{fatal}")
            time.sleep(0.2)
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _fatal_log_lines(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(line.strip() for line in text if any(marker in line for marker in _FATAL_MARKERS))

    def log_tail(self, lines: int = 20) -> str:
        """The server log's error lines, or its last lines when it has none (for error messages)."""
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        errors = [line for line in text if line.startswith(("E", "error")) and not _is_harmless(line)]
        return "\n".join((errors or text)[-lines:])

    def wait(self) -> int:
        """Block until the server process exits; its exit code."""
        if self._process is None:
            raise ServerError("server not started")
        return self._process.wait()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM lets in-flight requests finish), then kill if it hangs."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_TIMEOUT_SECONDS + 5)
            except subprocess.TimeoutExpired:
                LOGGER.warning("tritonserver did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def kill(self) -> None:
        """Kill the server and its model stubs at once (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self.stop()

    def __enter__(self) -> TritonServer:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
