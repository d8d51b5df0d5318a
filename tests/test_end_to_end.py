"""synth → train → export → serve → classify over real gRPC, through the CLI as a user runs it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import tritonclient.grpc as grpcclient

from radserve.server_config.triton import TritonServer
from radserve.server_config.triton_metrics import counters_since, model_counters
from radserve.synthetic.dataset import REGIONS, SyntheticRecord

TINY_MODEL = "tiny"  # exported by conftest's tiny_export


def _radserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radserve", *args], capture_output=True, text=True, timeout=300
    )


def _classify(triton: TritonServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``radserve classify`` with the tiny model on the test server."""
    return _radserve("classify", *args, "--model", TINY_MODEL, "--url", triton.grpc_url)


def test_classify_folder_accounts_for_every_file(
    triton: TritonServer, dicom_folder: Path, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    before = model_counters(triton.metrics_url, TINY_MODEL)
    done = _classify(
        triton,
        str(dicom_folder),
        "--output",
        str(output),
        "--max-in-flight",
        "8",
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(row["path"] for row in rows) == sorted(record.path for record in dicom_records)
    by_uid = {record.sop_instance_uid: record for record in dicom_records}
    for row in rows:
        assert row["status"] == "ok"
        assert row["sop_instance_uid"] in by_uid
        assert row["label"] in REGIONS
        assert abs(sum(row["probabilities"].values()) - 1.0) < 1e-4
        assert row["latency_ms"] > 0
    assert "radiographs/s" in done.stdout
    # Privacy: patient attributes never reach results or logs (synthetic names are "SYNTHETIC^NNNN").
    assert "SYNTHETIC^" not in output.read_text() + done.stdout + done.stderr
    served = model_counters(triton.metrics_url, TINY_MODEL) - before
    assert served.inferences == len(dicom_records)
    # the batches Prometheus counts are the ones Triton's statistics API reports (two sources)
    statistics = grpcclient.InferenceServerClient(triton.grpc_url).get_inference_statistics(TINY_MODEL)
    totals = model_counters(triton.metrics_url, TINY_MODEL)
    assert totals.executions == sum(int(stats.execution_count) for stats in statistics.model_stats)
    assert totals.inferences == sum(int(stats.inference_count) for stats in statistics.model_stats)
    assert 1 <= served.executions <= served.inferences


def test_bad_inputs_get_error_rows_and_exit_code_one(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("this is not a radiograph")
    missing = tmp_path / "missing.dcm"
    good = [record.path for record in dicom_records[:3]]
    output = tmp_path / "results.csv"
    done = _classify(
        triton,
        *good,
        str(not_dicom),
        str(missing),
        "--output",
        str(output),
    )
    assert done.returncode == 1, done.stderr
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 5
    errors = {row["path"]: row for row in rows if row["status"] == "error"}
    assert set(errors) == {str(not_dicom), str(missing)}
    for path, row in errors.items():
        assert row["error_reason"]
        assert path in row["error"]
    assert "2 errors" in done.stdout


def test_unknown_model_or_unreachable_server_is_a_clear_failure(
    triton: TritonServer, dicom_folder: Path
) -> None:
    done = _radserve("classify", str(dicom_folder), "--model", "nope", "--url", triton.grpc_url)
    assert done.returncode == 2
    assert "nope" in done.stderr


def test_resume_after_a_killed_run_completes_without_duplicates(
    triton: TritonServer, dicom_folder: Path, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    output = tmp_path / "results.jsonl"
    first = _classify(
        triton,
        str(dicom_folder),
        "--output",
        str(output),
        "-q",
    )
    assert first.returncode == 0, first.stderr
    lines = output.read_text().splitlines(keepends=True)
    output.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # as a kill mid-write leaves it
    resumed = _classify(
        triton,
        str(dicom_folder),
        "--output",
        str(output),
        "--resume",
        "-q",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"4 of {len(dicom_records)} files already done" in resumed.stderr
    paths = [json.loads(line)["path"] for line in output.read_text().splitlines()]
    assert sorted(paths) == sorted(record.path for record in dicom_records)


def test_preprocess_writes_the_exact_wire_tensor(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    import numpy as np

    from radserve.client.flow import prepare_file
    from radserve.model_card import ModelCard

    source = dicom_records[0].path
    done = _radserve(
        "preprocess",
        source,
        "--model",
        TINY_MODEL,
        "--url",
        triton.grpc_url,
        "--output",
        str(tmp_path / "wire.npy"),
    )
    assert done.returncode == 0, done.stderr
    tensor = np.load(tmp_path / "wire.npy")
    assert tensor.shape == (1, 64, 64) and tensor.dtype == np.uint8
    card = ModelCard.from_json((Path(triton.repository) / TINY_MODEL / "1" / "model_card.json").read_text())
    np.testing.assert_array_equal(tensor, prepare_file(source, card).radiographs[0].image)
    png = _radserve(
        "preprocess",
        source,
        "--model",
        TINY_MODEL,
        "--repository",
        str(triton.repository),
        "--output",
        str(tmp_path / "wire.png"),
    )
    assert png.returncode == 0 and (tmp_path / "wire.png").stat().st_size > 0


def test_structured_reports_reference_their_sources_and_model_version(
    triton: TritonServer, dicom_records: list[SyntheticRecord], tmp_path: Path
) -> None:
    import pydicom

    sources = dicom_records[:3]
    output = tmp_path / "results.jsonl"
    done = _classify(
        triton,
        *(r.path for r in sources),
        "--output",
        str(output),
        "--sr-dir",
        str(tmp_path / "sr"),
        "-q",
    )
    assert done.returncode == 0, done.stderr
    rows = {
        json.loads(line)["sop_instance_uid"]: json.loads(line) for line in output.read_text().splitlines()
    }
    reports = [pydicom.dcmread(path) for path in sorted((tmp_path / "sr").glob("*.dcm"))]
    assert len(reports) == len(sources)
    for report in reports:
        evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        source_uid = evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        row = rows[source_uid]
        assert row["model_version"] == "1"
        assert report.ManufacturerModelName == TINY_MODEL
        assert "1" in report.SoftwareVersions


def test_concurrent_requests_are_batched_by_the_server(triton: TritonServer) -> None:
    import asyncio

    import numpy as np

    from radserve.client.grpc_client import AsyncRadiographClient

    images = np.random.default_rng(5).integers(0, 256, (48, 1, 1, 64, 64), dtype=np.uint8)

    async def burst() -> None:
        async with AsyncRadiographClient(triton.grpc_url, max_in_flight=48) as client:
            await asyncio.gather(*(client.infer(TINY_MODEL, image) for image in images))

    before = model_counters(triton.metrics_url, TINY_MODEL)
    asyncio.run(burst())
    served = counters_since(triton.metrics_url, TINY_MODEL, before, requests=len(images))
    assert served.inferences == len(images)
    assert served.average_batch_size > 1.0  # the dynamic batcher formed batches


def test_a_batch_larger_than_the_engine_batch_runs_in_slices_row_for_row(triton: TritonServer) -> None:
    import numpy as np
    import onnxruntime

    from radserve.export.model_config import parse_config
    from radserve.model_card import ENGINE_BATCH_PARAMETER, INPUT_NAME, OUTPUT_NAME

    repository = Path(triton.repository) / TINY_MODEL
    config = parse_config((repository / "config.pbtxt").read_text())
    step = int(config.parameters[ENGINE_BATCH_PARAMETER].string_value)
    count = 2 * step + 1  # two full slices and a short one
    assert step > 1 and count <= config.max_batch_size
    images = np.random.default_rng(7).integers(0, 256, (count, 1, 64, 64), dtype=np.uint8)
    request = grpcclient.InferInput(INPUT_NAME, list(images.shape), "UINT8")
    request.set_data_from_numpy(images)
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        served = client.infer(TINY_MODEL, [request]).as_numpy(OUTPUT_NAME)
    session = onnxruntime.InferenceSession(str(repository / "1" / "model.onnx"))
    alone = np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: image[None]})[0] for image in images])
    np.testing.assert_allclose(served, alone, atol=1e-5)  # every row, in order, the tail included
