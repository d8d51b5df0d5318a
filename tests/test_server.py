"""The real tritonserver: start, readiness, clear errors, clean stop, `radserve serve`."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from radserve.errors import ServerError
from radserve.server_config.shm import REGION_PREFIX, SHM_DIR, remove_stale_regions
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
    stale = SHM_DIR / f"{REGION_PREFIX}radserve-test-{uuid.uuid4()}"  # as a SIGKILLed server leaves one
    stale.write_bytes(b"\0" * 4096)
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
        lines = [process.stdout.readline() for _ in range(7)]
        removed = re.match(r"removed (\d+) stale shared-memory region", lines[0])
        assert removed and int(removed[1]) >= 1 and not stale.exists(), lines
        assert lines[1].startswith("tritonserver ready"), lines
        assert f"127.0.0.1:{ports.grpc}" in lines[2]
        log = Path(lines[5].split()[-1])  # private: not a predictable name, only this user reads it
        assert log.parent.name.startswith("radserve-log-") and len(log.parent.name) > len("radserve-log-")
        assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
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


def _mapped_regions(pid: int) -> set[Path]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {path for path in SHM_DIR.glob(f"{REGION_PREFIX}*") if str(path) in maps}


def test_regions_of_a_killed_server_are_removed_and_live_ones_kept(
    triton: TritonServer, repository: Path, tiny_export: object
) -> None:
    server = TritonServer(repository, ports=free_ports()).start()
    regions = _mapped_regions(server.pid or 0)
    assert regions, "a running tritonserver maps its Python-backend regions"
    server.kill()  # SIGKILL: tritonserver cannot unlink its regions
    assert all(path.exists() for path in regions), "a killed tritonserver leaves its regions behind"
    live = _mapped_regions(triton.pid or 0)
    assert live
    removed, deadline = remove_stale_regions(), time.monotonic() + 10
    while any(path.exists() for path in regions) and time.monotonic() < deadline:
        time.sleep(0.2)  # the killed stubs' mappings are released a moment after SIGKILL
        removed += remove_stale_regions()
    assert removed >= len(regions)
    assert not any(path.exists() for path in regions)
    assert all(path.exists() for path in live)  # the live server's regions were left alone
