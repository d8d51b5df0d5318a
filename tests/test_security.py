"""TLS, mutual TLS and restricted APIs on the real tritonserver, with a throwaway CA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from radserve.model_card import INPUT_NAME, OUTPUT_NAME
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_security import ServerTls
from radserve.synthetic.dataset import SyntheticRecord
from radserve.transport import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER
from tests._certificates import CertificateAuthority, Issued

ADMIN_KEY = "k3y-for-tests"


def _radserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | (env or {}),
    )


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def client_cert(authority: CertificateAuthority) -> Issued:
    return authority.issue("client", server=False)


@pytest.fixture(scope="module")
def mtls_server(
    repository: Path,
    tiny_export: object,
    authority: CertificateAuthority,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonServer]:
    """Mutual TLS on gRPC and the restricted groups behind ADMIN_KEY."""
    issued = authority.issue("server", server=True)
    log = tmp_path_factory.mktemp("mtls") / "tritonserver.log"
    tls = ServerTls(issued.cert, issued.key, client_ca=authority.cert)
    with TritonServer(repository, ports=free_ports(), log_file=log, tls=tls, admin_key=ADMIN_KEY) as server:
        yield server


def _grpc(server: TritonServer, authority: CertificateAuthority | None, cert: Issued | None = None) -> Any:
    secure: dict[str, Any] = {}
    if authority is not None:
        secure = {"ssl": True, "root_certificates": str(authority.cert)}
    if cert is not None:
        secure |= {"private_key": str(cert.key), "certificate_chain": str(cert.cert)}
    return grpcclient.InferenceServerClient(server.grpc_url, **secure)


def _infer(client: Any, size: int = 64) -> np.ndarray:
    image = np.zeros((1, 1, size, size), np.uint8)
    request = grpcclient.InferInput(INPUT_NAME, list(image.shape), "UINT8")
    request.set_data_from_numpy(image)
    return client.infer("tiny", [request]).as_numpy(OUTPUT_NAME)


def test_classify_over_mutual_tls_works(
    mtls_server: TritonServer,
    authority: CertificateAuthority,
    client_cert: Issued,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
) -> None:
    output = tmp_path / "rows.jsonl"
    paths = [record.path for record in dicom_records[:4]]
    done = _radserve(
        "classify", *paths, "--model", "tiny", "--url", mtls_server.grpc_url, "--output", str(output),
        "--tls-ca", str(authority.cert), "--tls-cert", str(client_cert.cert),
        "--tls-key", str(client_cert.key), "--admin-key", ADMIN_KEY,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok"] * 4


def test_plaintext_and_certificateless_clients_are_refused(
    mtls_server: TritonServer, authority: CertificateAuthority
) -> None:
    for client in (_grpc(mtls_server, None), _grpc(mtls_server, authority)):
        with pytest.raises(InferenceServerException):
            client.is_server_live()
        with pytest.raises(InferenceServerException):
            _infer(client)


def test_evaluate_reaches_a_secured_server_through_the_connection_flags(
    mtls_server: TritonServer,
    authority: CertificateAuthority,
    client_cert: Issued,
    dicom_folder: Path,
    tmp_path: Path,
) -> None:
    common = (
        "evaluate", str(dicom_folder), "--model", "tiny", "--truth", str(dicom_folder / "manifest.csv"),
        "--url", mtls_server.grpc_url, "--tls-ca", str(authority.cert), "--tls-cert", str(client_cert.cert),
        "--tls-key", str(client_cert.key), "--ready-timeout", "5",
    )  # fmt: skip
    secured = _radserve(*common, "--admin-key", ADMIN_KEY, "--out", str(tmp_path / "evaluated"))
    assert secured.returncode in (0, 1), secured.stderr  # 1: some radiographs excluded from the metrics
    predictions = (tmp_path / "evaluated" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(list(dicom_folder.glob("*.dcm")))
    keyless = _radserve(*common, "--out", str(tmp_path / "refused"))  # the model config is restricted
    assert keyless.returncode == 2 and "cannot read config of model 'tiny'" in keyless.stderr, keyless.stderr


def test_bench_and_loadtest_reach_a_secured_server_through_the_connection_flags(
    mtls_server: TritonServer,
    authority: CertificateAuthority,
    client_cert: Issued,
    repository: Path,
    dicom_folder: Path,
    tmp_path: Path,
) -> None:
    connection = (
        "--url", mtls_server.grpc_url, "--tls-ca", str(authority.cert), "--tls-cert", str(client_cert.cert),
        "--tls-key", str(client_cert.key), "--admin-key", ADMIN_KEY,
    )  # fmt: skip
    bench = _radserve(
        "bench", "--model", "tiny", "--repository", str(repository), "--dicom", str(dicom_folder), "--quick",
        "--no-naive", "--repeats", "1", "--concurrency", "2", "--batches", "1", "--seconds", "0.3",
        "--out", str(tmp_path / "bench"), *connection,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stdout + bench.stderr
    result = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert all(run["images"] > 0 for point in result["served"] for run in point["runs"])
    assert result["end_to_end"]["extra"]["errors"] == 0 and result["end_to_end"]["runs"][0]["images"] > 0
    # the locust file fetches the card through the restricted model config: the admin key travels too
    out = tmp_path / "locust"
    loadtest = _radserve(
        "loadtest", "--model", "tiny", "--dicom", str(dicom_folder), "--out", str(out), *connection,
        env={"RADSERVE_SMOKE_SECONDS": "2"},
    )  # fmt: skip
    assert loadtest.returncode == 0, loadtest.stdout + loadtest.stderr
    (aggregated,) = [
        line for line in (out / "locust_stats.csv").read_text().splitlines() if "Aggregated" in line
    ]
    requests, failures = (int(value) for value in aggregated.split(",")[2:4])
    assert requests > 0 and failures == 0


def _grpc_admin_calls(client: Any, headers: dict[str, str] | None) -> dict[str, Callable[[], Any]]:
    return {
        "model-repository": lambda: client.get_model_repository_index(headers=headers),
        "model-config": lambda: client.get_model_config("tiny", headers=headers),
        "statistics": lambda: client.get_inference_statistics("tiny", headers=headers),
        "trace": lambda: client.get_trace_settings(headers=headers),
        "logging": lambda: client.get_log_settings(headers=headers),
        "shared-memory": lambda: client.get_system_shared_memory_status(headers=headers),
    }


HTTP_ADMIN_CALLS = {
    "model-repository": ("POST", "/v2/repository/index"),
    "model-config": ("GET", "/v2/models/tiny/config"),
    "statistics": ("GET", "/v2/models/tiny/stats"),
    "trace": ("GET", "/v2/trace/setting"),
    "logging": ("GET", "/v2/logging"),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status"),
}


def _http_status(server: TritonServer, method: str, path: str, headers: dict[str, str]) -> int:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(server.http_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_apis_need_the_key_inference_and_health_do_not(
    mtls_server: TritonServer, authority: CertificateAuthority, client_cert: Issued
) -> None:
    client = _grpc(mtls_server, authority, client_cert)
    for group, call in _grpc_admin_calls(client, None).items():
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
        assert _http_status(mtls_server, *HTTP_ADMIN_CALLS[group], {}) >= 400, group
    for group, call in _grpc_admin_calls(client, {GRPC_ADMIN_KEY_HEADER: ADMIN_KEY}).items():
        call()  # raises if refused
        assert _http_status(mtls_server, *HTTP_ADMIN_CALLS[group], {ADMIN_KEY_HEADER: ADMIN_KEY}) == 200, (
            group
        )
    wrong = _grpc_admin_calls(client, {GRPC_ADMIN_KEY_HEADER: "wrong"})
    with pytest.raises(InferenceServerException, match="restricted"):
        wrong["model-config"]()
    assert client.is_server_ready() and client.is_model_ready("tiny")
    probabilities = _infer(client)
    assert probabilities.shape[0] == 1 and abs(float(probabilities.sum()) - 1.0) < 1e-4
    assert _http_status(mtls_server, "GET", "/v2/health/ready", {}) == 200


def test_one_way_tls_classify_works_and_plaintext_is_refused(
    repository: Path,
    tiny_export: object,
    authority: CertificateAuthority,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
) -> None:
    issued = authority.issue("server-one-way", server=True)
    with TritonServer(repository, ports=free_ports(), tls=ServerTls(issued.cert, issued.key)) as server:
        paths = [record.path for record in dicom_records[:3]]
        common = ("classify", *paths, "--model", "tiny", "--url", server.grpc_url, "-q")
        secure = _radserve(*common, "--tls-ca", str(authority.cert))
        plain = _radserve(*common, env={"RADSERVE_CLIENT_READY_TIMEOUT_SECONDS": "2"})  # it never gets ready
        with pytest.raises(InferenceServerException):
            _grpc(server, None).is_server_live()
    assert secure.returncode == 0, secure.stderr
    assert plain.returncode == 2 and "radserve classify:" in plain.stderr, plain.stdout


def test_serve_refuses_a_network_address_without_tls(repository: Path, tiny_export: object) -> None:
    done = _radserve("serve", "--repository", str(repository), "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "without TLS" in done.stderr and "--insecure" in done.stderr
