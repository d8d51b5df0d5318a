"""evaluate and calibrate through the real tritonserver: metrics recomputed, calibration, decisions.

An over-confident model (the tiny checkpoint with temperature 0.3 baked into its graph) is served;
``radserve calibrate`` fits a temperature on 60 validation radiographs and publishes a new version,
which ``radserve evaluate`` measures on 60 other (held-out) radiographs.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.sr import ComprehensiveSR
from sklearn import metrics

from radserve.cli import main
from radserve.client._sr_content import DECISION, THRESHOLD, label_concept
from radserve.export.pipeline import ExportRequest, export_checkpoint
from radserve.export.repo_check import check_repository
from radserve.model_card import ModelCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.dataset import write_synthetic_set

MODEL = "overconfident"
MATRIX = (256, 208)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Validation and held-out folders of 60 synthetic radiographs each, with their manifests."""
    folders = {}
    for name, seed in (("validation", 31), ("held_out", 32)):
        folder = tmp_path_factory.mktemp(name)
        write_synthetic_set(folder, 60, seed=seed, matrix=MATRIX, compressed_share=0.0)
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def clinical_repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    repository = tmp_path_factory.mktemp("clinical-repository")
    export_checkpoint(
        ExportRequest(
            tiny_checkpoint, MODEL, repository, samples=8, card_updates={"temperature": 0.3}, gradcam=True
        )
    )
    return repository


@pytest.fixture(scope="module")
def server(clinical_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The over-confident model served; explicit model control, so the calibrated version is loaded
    into the same server."""
    log = tmp_path_factory.mktemp("clinical-triton") / "tritonserver.log"
    with TritonServer(
        clinical_repository, ports=free_ports(), log_file=log, model_control="explicit"
    ) as running:
        yield running


def _evaluate(
    server: TritonServer, folder: Path, out: Path, *extra: str, truth: Path | None = None
) -> tuple[int, dict]:
    truth = truth or folder / "manifest.csv"
    code = main(
        [
            "evaluate",
            str(folder),
            "--model",
            MODEL,
            "--truth",
            str(truth),
            "--out",
            str(out),
            "--url",
            server.grpc_url,
            *extra,
        ]
    )
    report = json.loads((out / "evaluation.json").read_text()) if (out / "evaluation.json").exists() else {}
    return code, report


@pytest.fixture(scope="module")
def before(
    server: TritonServer, sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evaluation-before")
    code, report = _evaluate(server, sets["held_out"], out)
    assert code == 0
    return out, report


def _bootstrap(y: np.ndarray, probabilities: np.ndarray, statistic) -> list[float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(1000):
        index = rng.integers(0, len(y), len(y))
        value = statistic(y[index], probabilities[index])
        if value is not None:
            values.append(value)
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _macro_auroc(y: np.ndarray, probabilities: np.ndarray) -> float | None:
    if len(np.unique(y)) < probabilities.shape[1]:
        return None
    return metrics.roc_auc_score(y, probabilities, multi_class="ovr", labels=range(probabilities.shape[1]))


def test_every_metric_recomputes_from_predictions(before: tuple[Path, dict]) -> None:
    out, report = before
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and all(row["truth"] and not row["excluded"] for row in rows)
    labels = report["labels"]
    y = np.array([labels.index(row["truth"]) for row in rows])
    p = np.array([[row["probabilities"][label] for label in labels] for row in rows])
    predicted = p.argmax(axis=1)
    expected = {
        "accuracy": metrics.accuracy_score(y, predicted),
        "balanced_accuracy": metrics.balanced_accuracy_score(y, predicted),
        "macro_auroc": _macro_auroc(y, p),
        "brier": np.mean(np.sum((p - np.eye(len(labels))[y]) ** 2, axis=1)),
        "accuracy_ci": _bootstrap(y, p, lambda a, b: metrics.accuracy_score(a, b.argmax(axis=1))),
        "macro_auroc_ci": _bootstrap(y, p, _macro_auroc),
    }
    confidence, correct = p.max(axis=1), predicted == y
    bins = np.minimum((confidence * 15 - 1e-12).astype(int), 14)
    expected["ece"] = sum(
        (bins == b).mean() * abs(correct[bins == b].mean() - confidence[bins == b].mean())
        for b in range(15)
        if (bins == b).any()
    )
    assert report["n"] == 60 and report["model"] == MODEL and report["model_version"] == "1"
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=1e-9), key
    confusion = metrics.confusion_matrix(y, predicted, labels=range(len(labels)))
    assert report["confusion"] == confusion.tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=range(len(labels)), zero_division=0
    )
    for k, label in enumerate(labels):
        figures = report["per_class"][label]
        negatives = y != k
        assert figures["precision"] == pytest.approx(precision[k], abs=1e-9)
        assert figures["recall"] == pytest.approx(recall[k], abs=1e-9)
        assert figures["f1"] == pytest.approx(f1[k], abs=1e-9)
        assert figures["support"] == support[k]
        assert figures["specificity"] == pytest.approx((predicted[negatives] != k).mean(), abs=1e-9)
        assert figures["auroc"] == pytest.approx(metrics.roc_auc_score(y == k, p[:, k]), abs=1e-9)
        assert figures["ap"] == pytest.approx(metrics.average_precision_score(y == k, p[:, k]), abs=1e-9)
    for plot in ("roc.png", "reliability.png", "confusion.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ood = report["out_of_distribution"]  # the input contract's flag, counted from the rows
    assert ood["of"] == 60 and ood["flagged"] == sum(bool(row["ood"]) for row in rows)
    assert ood["threshold"] is not None and (ood["flagged"] == 0) == all(row["ood"] is False for row in rows)


def test_bad_inputs_are_named_rows_and_counts_add_up(
    server: TritonServer, sets: dict[str, Path], tmp_path: Path
) -> None:
    records = list(csv.DictReader((sets["held_out"] / "manifest.csv").open()))
    folder = tmp_path / "inputs"
    folder.mkdir()
    for record in records[:5]:
        shutil.copy(record["path"], folder)
    data = Path(records[5]["path"]).read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 2])  # fails to decode
    (folder / "notes.dcm").write_text("not a radiograph")
    truth = tmp_path / "truth.csv"
    with truth.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["sop_instance_uid", "label"])
        writer.writerow([records[0]["sop_instance_uid"], records[0]["region"]])
        writer.writerow([records[1]["sop_instance_uid"], records[1]["region"]])
        writer.writerow([records[2]["sop_instance_uid"], ""])  # missing label
        writer.writerow([records[3]["sop_instance_uid"], "skull"])  # not a label of the model
        # records[4]: no truth entry
    code, report = _evaluate(server, folder, tmp_path / "out", truth=truth)
    assert code == 1
    excluded = report["excluded"]
    assert excluded["by_reason"].keys() >= {"missing_label", "unknown_label", "no_truth", "not_dicom"}
    assert excluded["count"] == 5 and report["n"] == 2 and report["rows"] == 7 == report["files"]
    named = {Path(row["path"]).name: row["excluded"] for row in excluded["rows"]}
    assert named["notes.dcm"] == "not_dicom" and named["truncated.dcm"] not in ("", "no_truth")
    assert named[Path(records[3]["path"]).name] == "unknown_label"
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 7


def test_empty_or_unmatched_truth_is_a_one_line_error(
    server: TritonServer, sets: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(str(path) for path in sets["held_out"].glob("*.dcm"))[:3]
    empty = tmp_path / "empty.csv"
    empty.write_text("sop_instance_uid,label\n")
    unmatched = tmp_path / "unmatched.csv"
    unmatched.write_text("sop_instance_uid,label\n1.2.3.4,knee\n")
    for truth, message in ((empty, "has no rows"), (unmatched, "none of the 3 result rows")):
        capsys.readouterr()
        args = ["evaluate", *files, "--model", MODEL, "--truth", str(truth), "--out", str(tmp_path / "o")]
        assert main([*args, "--url", server.grpc_url]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error


def test_calibration_refuses_a_small_set(
    server: TritonServer, dicom_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["calibrate", str(dicom_folder), "--model", MODEL, "--truth", str(dicom_folder / "manifest.csv")]
    assert main([*args, "--url", server.grpc_url]) == 2
    assert "at least 50 radiographs" in capsys.readouterr().err


@pytest.fixture(scope="module")
def calibrated(
    server: TritonServer,
    before: tuple[Path, dict],
    sets: dict[str, Path],
    clinical_repository: Path,
    tiny_checkpoint: Path,
) -> TritonServer:
    """Calibrate on the validation set, publish version 2 with thresholds, serve it (after ``before``
    measured version 1)."""
    validation = sets["validation"]
    code = main(
        [
            "calibrate", str(validation), "--model", MODEL, "--truth", str(validation / "manifest.csv"),
            "--url", server.grpc_url, "--threshold", "youden",
            "--publish", str(tiny_checkpoint), "--repository", str(clinical_repository),
        ]
    )  # fmt: skip
    assert code == 0
    for model in (MODEL, f"{MODEL}_gradcam"):
        server.reload(model)
    return server


def test_fitted_temperature_halves_ece_on_held_out_data(
    calibrated: TritonServer,
    before: tuple[Path, dict],
    sets: dict[str, Path],
    clinical_repository: Path,
    tmp_path: Path,
) -> None:
    card = ModelCard.from_repository(clinical_repository, MODEL)
    assert card.temperature > 0.3 and card.calibration.n == 60
    # the Grad-CAM companion was re-published with the same temperature, and the repository is valid
    companion = ModelCard.from_repository(clinical_repository, f"{MODEL}_gradcam")
    assert companion.temperature == card.temperature
    assert companion.parity.gradcam.min_pearson >= 0.99
    assert check_repository(clinical_repository).ok
    assert card.calibration.ece_after < card.calibration.ece_before
    code, after = _evaluate(calibrated, sets["held_out"], tmp_path)
    assert code == 0 and after["model_version"] == "2"
    ece_before = before[1]["ece"]
    print(f"held-out ECE {ece_before:.4f} -> {after['ece']:.4f} (temperature {card.temperature:.4f})")
    assert after["ece"] <= 0.5 * ece_before
    assert after["accuracy"] == pytest.approx(before[1]["accuracy"])  # temperature keeps the ranking
    for label, point in after["operating_points"].items():
        assert point["threshold"] == card.operating_points[label].threshold
        assert 0 <= point["sensitivity"] <= 1 and 0 <= point["specificity"] <= 1


def test_rows_carry_decisions_in_jsonl_csv_and_sr(
    calibrated: TritonServer, sets: dict[str, Path], clinical_repository: Path, tmp_path: Path
) -> None:
    card = ModelCard.from_repository(clinical_repository, MODEL)
    assert set(card.operating_points) == set(card.labels)
    files = sorted(str(path) for path in sets["held_out"].glob("*.dcm"))[:6]
    common = ["classify", *files, "--model", MODEL, "--url", calibrated.grpc_url, "-q"]
    assert main([*common, "--output", str(tmp_path / "rows.jsonl"), "--sr-dir", str(tmp_path / "sr")]) == 0
    assert main([*common, "--output", str(tmp_path / "rows.csv")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    table = {row["path"]: row for row in csv.DictReader((tmp_path / "rows.csv").open())}
    assert len(rows) == 6
    for row in rows:
        decision, threshold = card.decide(row["probabilities"])
        assert (row["decision"], row["threshold"]) == (decision, threshold)
        assert table[row["path"]]["decision"] == decision
        assert float(table[row["path"]]["threshold"]) == threshold
    for path in (tmp_path / "sr").rglob("*.dcm"):
        (group,) = ComprehensiveSR.from_dataset(pydicom.dcmread(path)).content.get_image_measurement_groups()
        (decision,) = group.get_qualitative_evaluations()
        assert decision.name == DECISION
        assert decision.value.meaning in {
            *(label_concept(label).meaning for label in card.labels),
            "Negative",
        }
        assert group.get_measurements(name=THRESHOLD)[0].value is not None
