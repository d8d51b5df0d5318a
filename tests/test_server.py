"""The real tritonserver: start, readiness, clear errors, clean stop, `radserve serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radserve.errors import ServerError
from radserve.server_config.triton import TritonServer, free_ports


def test_server_is_ready_and_serves_the_model(triton: TritonServer) -> None:
    assert triton.is_running()
    assert triton.is_ready()


def test_missing_or_empty_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist"):
        TritonServer(tmp_path / "absent").start()
    with pytest.raises(ServerError, match="holds no model"):
        TritonServer(tmp_path).start()


def test_missing_binary_is_a_clear_error(repository: Path, tiny_export: object, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="binary not found"):
        TritonServer(repository, ports=free_ports(), binary=tmp_path / "tritonserver").start()


def test_taken_port_is_a_clear_error(repository: Path, tiny_export: object) -> None:
    ports = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.grpc))
        taken.listen()
        with pytest.raises(ServerError, match=f"gRPC port {ports.grpc} .* not available"):
            TritonServer(repository, ports=ports).start()


def test_invalid_model_fails_start_with_tritons_reason(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 4\n')
    with pytest.raises(ServerError, match="broken"):
        TritonServer(tmp_path, ports=free_ports()).start(timeout=60)


def test_serve_command_prints_endpoints_and_stops_on_sigterm(repository: Path, tiny_export: object) -> None:
    ports = free_ports()
    command = [
        sys.executable,
        "-m",
        "radserve",
        "serve",
        "--repository",
        str(repository),
        "--http-port",
        str(ports.http),
        "--grpc-port",
        str(ports.grpc),
        "--metrics-port",
        str(ports.metrics),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("tritonserver ready"), lines
        assert f"127.0.0.1:{ports.grpc}" in lines[1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:  # a failed assertion: let radserve stop its tritonserver first
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
    with socket.socket() as probe:  # the server released its port
        probe.bind(("127.0.0.1", ports.grpc))
