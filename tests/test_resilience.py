"""Nothing lost, nothing duplicated: server crash and restart mid-run, corrupted inputs."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from radserve.client.classify import ClassifyOptions, classify
from radserve.client.grpc_client import RetryPolicy
from radserve.client.results import ResultRow
from radserve.client.sync_client import RadiographClient, classify_paths
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_metrics import model_counters
from radserve.synthetic.dataset import SyntheticRecord


def _copies(records: list[SyntheticRecord], folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for index in range(count):
        target = folder / f"{index:03d}.dcm"
        shutil.copyfile(records[index % len(records)].path, target)
        paths.append(target)
    return paths


def test_server_killed_and_restarted_mid_run_gives_each_file_exactly_one_result(
    repository: Path, tiny_export: object, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    files = _copies(dicom_records, tmp_path / "inputs", 60)
    ports = free_ports()
    server = TritonServer(repository, ports=ports, log_file=tmp_path / "first.log").start()
    rows: list[ResultRow] = []
    options = ClassifyOptions(
        url=server.grpc_url,
        max_in_flight=2,
        workers=1,
        retry=RetryPolicy(give_up_after_seconds=120.0, request_timeout_seconds=10.0),
    )
    # The runner works in a thread so that the test can crash the server meanwhile.
    run = threading.Thread(target=lambda: asyncio.run(classify(files, "tiny", rows.extend, options)))
    run.start()
    try:
        deadline = time.monotonic() + 60
        while len(rows) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 5 <= len(rows) < len(files), "the run should be under way when the server dies"
        server.kill()
        killed_at = len(rows)
        time.sleep(1.0)  # requests fail with UNAVAILABLE meanwhile and are retried
        server = TritonServer(repository, ports=ports, log_file=tmp_path / "second.log").start()
        run.join(timeout=180)
        assert not run.is_alive()
    finally:
        server.stop()
    assert killed_at < len(files)
    counts = Counter(row.path for row in rows)
    assert sorted(counts) == sorted(str(path) for path in files)
    assert set(counts.values()) == {1}
    assert all(row.status == "ok" for row in rows), [row.error for row in rows if row.status != "ok"]


def test_corrupted_and_truncated_files_give_one_row_each(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    sources = [Path(record.path).read_bytes() for record in dicom_records[:5]]
    for index in range(40):
        data = bytearray(sources[index % len(sources)])
        if index % 2:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 50))):
                data[position] = int(rng.integers(0, 256))
        (folder / f"{index:02d}.dcm").write_bytes(bytes(data))
    (folder / "empty.dcm").write_bytes(b"")
    rows, summary = classify_paths([folder], "tiny", ClassifyOptions(url=triton.grpc_url, workers=1))
    assert summary.files == 41
    files_seen = Counter(row.path for row in rows)
    assert len(files_seen) == 41
    for row in rows:
        if row.status == "error":
            assert row.error_reason and row.path in row.error
            assert files_seen[row.path] == 1
    assert any(row.status == "error" for row in rows)


def test_blocking_client_matches_the_async_one(triton: TritonServer) -> None:
    images = np.random.default_rng(3).integers(0, 256, (4, 1, 64, 64), dtype=np.uint8)
    with RadiographClient(triton.grpc_url) as client:
        client.wait_ready("tiny")
        card = client.model_card("tiny")
        batch = client.infer("tiny", images)
        singles = client.infer_many("tiny", list(images))
    assert batch.probabilities.shape == (4, card.num_classes)
    np.testing.assert_allclose(
        np.concatenate([p.probabilities for p in singles]), batch.probabilities, atol=1e-5
    )


def test_two_replicas_share_the_load_and_cover_for_each_other(
    repository: Path,
    tiny_export: object,
    triton: TritonServer,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
) -> None:
    files = _copies(dicom_records, tmp_path / "inputs", 40)
    replica = TritonServer(repository, ports=free_ports(), log_file=tmp_path / "replica.log").start()
    before = {server.grpc_url: model_counters(server.metrics_url, "tiny") for server in (triton, replica)}
    rows: list[ResultRow] = []
    options = ClassifyOptions(url=[triton.grpc_url, replica.grpc_url], max_in_flight=4, workers=1)
    run = threading.Thread(target=lambda: asyncio.run(classify(files, "tiny", rows.extend, options)))
    run.start()
    try:
        deadline = time.monotonic() + 60
        while len(rows) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        served = {
            url: model_counters(server.metrics_url, "tiny") - before[url]
            for url, server in ((triton.grpc_url, triton), (replica.grpc_url, replica))
        }
        replica.kill()  # the survivor takes over the rest of the run
        run.join(timeout=180)
    finally:
        replica.stop()
    assert all(counters.inferences > 0 for counters in served.values()), served
    counts = Counter(row.path for row in rows)
    assert len(counts) == len(files) and set(counts.values()) == {1}
    assert all(row.status == "ok" for row in rows)
