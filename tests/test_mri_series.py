"""MRI studies → one tensor and one row per study: grouping, T1W/T2W, slice order, named error rows.

The end-to-end test serves a real (random-weight) 6-channel ResNet-50 export of the
vertebral-fracture-mri system in the real tritonserver.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from pydicom.uid import EnhancedMRImageStorage

from radserve.client.classify import ClassifyOptions
from radserve.client.contract import check_contract
from radserve.client.mri_classify import classify_studies, read_slices
from radserve.client.mri_series import SliceFile, StudyError, study_tensor, study_tensors, weighting
from radserve.client.sync_client import classify_paths
from radserve.errors import ModelCardError, NotAcceptedError
from radserve.export.architectures import build_model
from radserve.export.checkpoint import save_checkpoint
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.model_card import ModelCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.mri import mri_study, write_mri_set
from radserve.systems import get_system

MATRIX = (64, 64)
SYSTEM = get_system("vertebral-fracture-mri")
CARD = ModelCard(
    name="mri",
    architecture="resnet50",
    labels=SYSTEM.labels,
    input_size=(64, 64),
    channels=SYSTEM.channels,
    resize="stretch",
)


def _slices(seed: int = 0, **kwargs: object) -> list[SliceFile]:
    study = mri_study("malignant", np.random.default_rng(seed), slices=7, matrix=MATRIX, **kwargs)
    return [SliceFile(f"s{i}.dcm", ds) for i, ds in enumerate(study.datasets)]


def test_synthetic_study_is_mr_storage_with_two_sequences() -> None:
    study = mri_study("benign", np.random.default_rng(1), slices=7, matrix=MATRIX, extra_series=True)
    assert {str(ds.SOPClassUID) for ds in study.datasets} == {"1.2.840.10008.5.1.4.1.1.4"}
    assert len({str(ds.SeriesInstanceUID) for ds in study.datasets}) == 3
    assert {str(ds.StudyInstanceUID) for ds in study.datasets} == {study.study_instance_uid}
    assert all(ds.BitsAllocated == 16 and ds.Modality == "MR" for ds in study.datasets)
    weightings = [weighting(ds) for ds in study.datasets if "SAG" in ds.SeriesDescription]
    assert weightings.count("T1") == weightings.count("T2") == 7
    again = mri_study("benign", np.random.default_rng(1), slices=7, matrix=MATRIX, extra_series=True)
    assert [ds.SOPInstanceUID for ds in again.datasets] == [ds.SOPInstanceUID for ds in study.datasets]
    assert np.array_equal(again.datasets[3].pixel_array, study.datasets[3].pixel_array)


def test_study_tensor_stacks_t1_then_t2_around_the_lesion() -> None:
    slices = _slices()
    tensor = study_tensor("s", slices, CARD)
    assert tensor.shape == (6, 64, 64) and tensor.dtype == np.uint8
    t1_mean, t2_mean = tensor[:3].mean(), tensor[3:].mean()
    assert t1_mean != pytest.approx(t2_mean, abs=1.0)
    shuffled = slices.copy()
    random.Random(3).shuffle(shuffled)
    assert np.array_equal(study_tensor("s", shuffled, CARD), tensor)
    with_extra = _slices(extra_series=True)
    assert np.array_equal(study_tensor("s", with_extra, CARD), tensor)
    moved = study_tensor("s", slices, CARD, lesion_index=2)
    assert not np.array_equal(moved, tensor)


def test_sequence_falls_back_to_the_series_description() -> None:
    ds = _slices()[0].dataset
    del ds.RepetitionTime
    ds.SeriesDescription = "sag T2W"
    assert weighting(ds) == "T2"
    ds.ScanningSequence = "IR"
    assert weighting(ds) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("drop_t2", "missing_t2w_series"),
        ("single_slice", "too_few_slices"),
        ("gap", "inconsistent_slice_spacing"),
        ("edge", "too_few_slices"),
    ],
)
def test_a_study_that_cannot_be_built_names_why(change: str, reason: str) -> None:
    slices = _slices()
    lesion = None
    if change == "drop_t2":
        slices = [s for s in slices if "T2" not in s.dataset.SeriesDescription]
    elif change == "single_slice":
        t2 = [s for s in slices if "T2" in s.dataset.SeriesDescription]
        slices = [s for s in slices if "T1" in s.dataset.SeriesDescription] + t2[:1]
    elif change == "gap":
        slices = [
            s for s in slices if s.dataset.InstanceNumber != 3 or "T1" not in s.dataset.SeriesDescription
        ]
    else:
        lesion = 0
    with pytest.raises(StudyError) as raised:
        study_tensor("s", slices, CARD, lesion_index=lesion)
    assert raised.value.reason == reason


def _restored(slices: list[SliceFile], change: str) -> list[SliceFile]:
    """The same study with each slice's stored values re-encoded: ``signed`` (Pixel Representation 1,
    values shifted below zero in 16-bit two's complement, Bits Stored 12) or ``garbage`` (unsigned, bits
    above Bits Stored set)."""
    changed = []
    for item in slices:
        ds = copy.deepcopy(item.dataset)
        values = ds.pixel_array.astype(np.int32)
        if change == "signed":
            ds.PixelRepresentation = 1
            ds.PixelData = (values - 2048).astype("<i2").tobytes()
        else:
            ds.PixelData = (values | 0xA000).astype("<u2").tobytes()
        changed.append(SliceFile(item.path, ds))
    return changed


@pytest.mark.parametrize("change", ["signed", "garbage"])
def test_stored_values_are_read_as_the_display_pipeline_reads_them(change: str) -> None:
    """Signed MR (negative values) and bits above Bits Stored: the same tensor as the plain study (the
    percentile window does not move with an offset of every value)."""
    slices = _slices()
    changed = _restored(slices, change)
    if change == "signed":
        assert min(int(item.dataset.pixel_array.min()) for item in changed) < 0
    np.testing.assert_array_equal(study_tensor("s", changed, CARD), study_tensor("s", slices, CARD))


def test_enhanced_mr_is_named_not_a_missing_series() -> None:
    slices = _slices()
    t2 = [s for s in slices if "T2" in s.dataset.SeriesDescription]
    enhanced = copy.deepcopy(t2[0].dataset)
    enhanced.SOPClassUID = EnhancedMRImageStorage
    enhanced.NumberOfFrames = len(t2)
    kept = [s for s in slices if s not in t2] + [SliceFile("/data/enhanced.dcm", enhanced)]
    with pytest.raises(StudyError) as raised:
        study_tensor("s", kept, CARD)
    assert raised.value.reason == "enhanced_mr"
    assert "/data/enhanced.dcm" in str(raised.value) and "Enhanced MR Image Storage" in str(raised.value)
    exported = SYSTEM.apply(CARD.replace(input_size=(112, 112)), SYSTEM.network_channels)
    assert exported.accepts == SYSTEM.accepts and exported.accepts.modalities == ("MR",)
    with pytest.raises(NotAcceptedError, match="Enhanced MR Image Storage"):
        check_contract(enhanced, exported.accepts, "/data/enhanced.dcm")


def test_series_rows_apply_the_cards_contract() -> None:
    """A study of slices outside the contract has no tensor, only refusals (the session answers it with
    one not_accepted row); a refused slice of an accepted study has its own row beside the study's."""
    card = CARD.replace(accepts=SYSTEM.accepts)
    slices = _slices()
    refused = [SliceFile(f"other/{s.path}", copy.deepcopy(s.dataset)) for s in _slices(seed=1)]
    for item in refused:
        item.dataset.Modality = "CT"
    scout = copy.deepcopy(slices[0].dataset)
    scout.Modality, scout.SOPInstanceUID = "OT", "1.2.826.0.1.3680043.10.543.99"
    studies = {
        study: (where, tensor, rows)
        for where, study, tensor, rows in study_tensors(
            [*slices, SliceFile("scout.dcm", scout), *refused], card, "mri"
        )
    }
    _, tensor, rows = studies[slices[0].dataset.StudyInstanceUID]
    assert isinstance(tensor, np.ndarray) and tensor.shape[0] == card.channels
    assert [(row.status, row.error_reason, row.path) for row in rows] == [
        ("not_accepted", "modality", "scout.dcm")
    ]
    where, tensor, rows = studies[refused[0].dataset.StudyInstanceUID]
    assert where == "other" and tensor is None and len(rows) == len(refused)
    assert all(row.status == "not_accepted" and row.error_reason == "modality" for row in rows)
    assert "modality CT not in MR" in rows[0].error


@pytest.fixture(scope="module")
def mri_export(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("mri-model")
    card = CARD.replace(input_size=(112, 112))
    save_checkpoint(folder / "mri.pt", build_model("resnet50", 2, 6), card)
    request = ExportRequest(folder / "mri.pt", "mri", folder / "repo", samples=4, system=SYSTEM.name)
    return export_checkpoint(request)


@pytest.fixture(scope="module")
def mri_server(mri_export: ExportResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("mri-triton") / "tritonserver.log"
    with TritonServer(mri_export.version_dir.parent.parent, ports=free_ports(), log_file=log) as server:
        yield server


def test_mri_export_takes_six_channels(mri_export: ExportResult) -> None:
    assert mri_export.card.channels == 6 and mri_export.card.input_size == (224, 224)
    session = onnxruntime.InferenceSession(str(mri_export.version_dir / "model.onnx"))
    images = np.random.default_rng(0).integers(0, 256, (3, 6, 224, 224), dtype=np.uint8)
    (probabilities,) = session.run(None, {"image": images})
    assert probabilities.shape == (3, 2)


def test_a_folder_of_studies_gives_one_row_per_study(mri_server: TritonServer, tmp_path: Path) -> None:
    studies = write_mri_set(tmp_path / "mri", 3, seed=5, slices=5, matrix=MATRIX, extra_series_share=0.5)
    broken = tmp_path / "mri" / "study_0002"
    for path in broken.glob("s2_*.dcm"):  # no T2W series left in the third study
        path.unlink()
    (tmp_path / "mri" / "junk.dcm").write_bytes(b"not dicom")
    rows = classify_studies([tmp_path / "mri"], "mri", mri_server.grpc_url)
    by_study = {row.study_instance_uid: row for row in rows if row.study_instance_uid}
    assert set(by_study) == {study.study_instance_uid for study in studies}
    assert len(rows) == 4  # three studies and the unreadable file
    ok = [by_study[s.study_instance_uid] for s in studies[:2]]
    assert all(row.status == "ok" and row.label in SYSTEM.labels and row.model_version == "1" for row in ok)
    assert all(sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-5) for row in ok)
    assert by_study[studies[2].study_instance_uid].error_reason == "missing_t2w_series"
    (junk,) = [row for row in rows if not row.study_instance_uid]
    assert junk.error_reason == "not_dicom" and junk.path.endswith("junk.dcm")
    slices, errors = read_slices([str(p) for p in sorted((tmp_path / "mri" / "study_0000").glob("*.dcm"))])
    assert not errors and len(slices) >= 10


def test_the_radiograph_runner_refuses_a_study_model(mri_server: TritonServer, tmp_path: Path) -> None:
    write_mri_set(tmp_path / "one", 1, slices=3, matrix=MATRIX)
    with pytest.raises(ModelCardError, match="takes 6-channel studies: use classify-series"):
        classify_paths([str(tmp_path / "one")], "mri", ClassifyOptions(url=[mri_server.grpc_url], workers=1))


def test_evaluate_scores_one_row_per_study_against_the_manifest(
    mri_server: TritonServer, tmp_path: Path
) -> None:
    import csv
    import json

    from radserve.cli import main

    studies = write_mri_set(tmp_path / "mri", 4, seed=9, slices=5, matrix=MATRIX)
    out = tmp_path / "evaluation"
    manifest = tmp_path / "mri" / "manifest.csv"
    argv = ["evaluate", str(tmp_path / "mri"), "--model", "mri", "--truth", str(manifest)]
    assert main([*argv, "--url", mri_server.grpc_url, "--out", str(out)]) == 0
    with manifest.open(newline="") as stream:
        truth = {record["study_instance_uid"]: record["label"] for record in csv.DictReader(stream)}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {row["study_instance_uid"]: row["truth"] for row in rows} == truth
    assert len(truth) == len(studies) and not any(row["excluded"] for row in rows)
    report = json.loads((out / "evaluation.json").read_text())
    assert (
        report["unit"] == "studies"
        and report["rows"] == len(studies)
        and report["files"] == sum(len(s.datasets) for s in studies)
    )
    assert report["n"] == len(studies) == sum(map(sum, report["confusion"]))


def test_the_listener_classifies_a_study_once_quiet_and_regroups_the_spool_on_restart(
    mri_server: TritonServer, tmp_path: Path
) -> None:
    """``listen --studies``: MR instances by storescu, one row per study once none arrived for the quiet
    time. The first listener has no server (the study stays spooled, retried); the second, on the same
    spool, re-groups what it finds and writes the study's row: the same as classify-series gives."""
    import shutil
    from dataclasses import replace

    import pydicom
    from pynetdicom.sop_class import ComputedRadiographyImageStorage

    from radserve.client.listen import ListenOptions
    from tests.test_listen import _in_process, _rows, _storescu, _wait_for

    if shutil.which("storescu") is None:
        pytest.skip("dcmtk is not installed (make test installs it as root)")
    (study,) = write_mri_set(tmp_path / "mri", 1, seed=3, slices=5, matrix=MATRIX)
    files = sorted(str(path) for path in (tmp_path / "mri").rglob("*.dcm"))
    radiograph = pydicom.dcmread(files[0])  # the same pixels as CR: not offered to a study listener
    radiograph.SOPClassUID = radiograph.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    radiograph.save_as(tmp_path / "cr.dcm", enforce_file_format=True)
    away = ClassifyOptions(url=f"127.0.0.1:{free_ports().grpc}", ready_timeout_seconds=0.5)
    options = ListenOptions(
        model="mri", output=tmp_path / "r.jsonl", spool=tmp_path / "spool", port=0, classify=away,
        studies=True, study_quiet_seconds=0.5, retry_initial_seconds=0.2, retry_max_seconds=0.5,
    )  # fmt: skip
    with _in_process(options) as listener:
        assert _storescu(listener.port, files).returncode == 0
        refused = _storescu(listener.port, [str(tmp_path / "cr.dcm")])
        assert refused.returncode != 0 and "No presentation context" in refused.stdout + refused.stderr
        retries = listener.metrics.registry.get_sample_value
        _wait_for(lambda: (retries("radserve_listen_retries_total", {"cause": "transient"}) or 0) >= 2,
                  60, "the study to be retried while no server answers")  # fmt: skip
    assert not _rows(options.output) and len(list(options.spool.glob("*.dcm"))) == len(files)

    served = ClassifyOptions(url=mri_server.grpc_url)
    with _in_process(replace(options, classify=served)):
        _wait_for(lambda: len(_rows(options.output)) == 1, 120, "the study's row")
    (row,) = _rows(options.output)
    (direct,) = classify_studies([tmp_path / "mri"], "mri", mri_server.grpc_url)
    assert (row["status"], row["study_instance_uid"]) == ("ok", study.study_instance_uid), row
    same = ("label", "probabilities", "decision", "threshold", "ood", "model_version")
    assert {key: row[key] for key in same} == {key: getattr(direct, key) for key in same}
    assert row["path"] == str(options.spool.resolve() / study.study_instance_uid)
    assert not list(options.spool.glob("*.dcm"))  # every instance left the spool with the study's row


def test_a_study_model_behind_a_radiograph_listener_stops_it_saying_why(
    mri_server: TritonServer, dicom_records: list, tmp_path: Path
) -> None:
    """The listener cannot classify an instance with a study model: it ends (one reason, naming
    --studies) instead of retrying for ever, and the acknowledged instance waits in the spool, its
    attempt not counted against it."""
    import shutil
    import threading

    from pydicom.uid import ExplicitVRLittleEndian

    from radserve.client.listen import Listener, ListenOptions
    from radserve.client.listen.spool import Spool
    from radserve.errors import ConfigurationError
    from tests.test_listen import _storescu, _wait_for

    if shutil.which("storescu") is None:
        pytest.skip("dcmtk is not installed (make test installs it as root)")
    options = ListenOptions(
        model="mri", output=tmp_path / "r.jsonl", spool=tmp_path / "spool", port=0,
        classify=ClassifyOptions(url=mri_server.grpc_url),
    )  # fmt: skip
    listener, ended = Listener(options), []

    def run() -> None:
        try:
            listener.run()
        except ConfigurationError as error:
            ended.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert listener.wait_ready(30)
    record = next(r for r in dicom_records if r.transfer_syntax == ExplicitVRLittleEndian)
    assert _storescu(listener.port, [record.path]).returncode == 0
    _wait_for(lambda: not thread.is_alive(), 60, "the listener to end")
    (error,) = ended
    assert "takes 6-channel studies" in str(error) and "--studies" in str(error)
    (spooled,) = options.spool.glob("*.dcm")
    spool = Spool(options.spool)
    assert spool.attempts(spooled) == 0
    spool.close()
