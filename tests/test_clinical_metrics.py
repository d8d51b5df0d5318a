"""Metrics, temperature fitting, threshold rules, truth files and model-card operating points (no server)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from radserve.client.results import ResultRow
from radserve.clinical.calibration import (
    choose_threshold,
    fit_temperature,
    operating_points,
    parse_rules,
    scaled,
)
from radserve.clinical.scores import expected_calibration_error
from radserve.clinical.truth import read_truth
from radserve.errors import ClinicalError, ModelCardError
from radserve.model_card import Calibration, ModelCard, OperatingPoint

LABELS = ("a", "b", "c")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _sample(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and the probabilities of a model that reports softmax(z / T)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 3))
    truth = np.array([rng.choice(3, p=p) for p in _softmax(logits)])
    return truth, _softmax(logits / temperature)


def test_ece_matches_a_histogram_computation() -> None:
    truth, probabilities = _sample(400, 0.5)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for low, high in itertools.pairwise(edges):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            expected += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    assert expected_calibration_error(truth, probabilities) == pytest.approx(expected, abs=1e-12)


def test_fitted_temperature_recovers_the_true_one() -> None:
    truth, probabilities = _sample(3000, 0.3, seed=1)  # over-confident by a factor 1/0.3
    fit = fit_temperature(truth, probabilities)
    assert fit.temperature == pytest.approx(1 / 0.3, rel=0.1)
    assert fit.nll_after < fit.nll_before
    assert fit.ece_after < 0.5 * fit.ece_before
    assert not fit.at_bound
    uninformative = fit_temperature(truth, np.random.default_rng(2).dirichlet([0.2] * 3, len(truth)))
    assert uninformative.at_bound  # probabilities unrelated to the labels: flattened as far as allowed
    calibrated = scaled(probabilities, fit.temperature)
    assert np.allclose(calibrated.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    ("truth", "message"),
    [(np.zeros(60, dtype=int), "two classes"), (np.arange(49) % 3, "at least 50")],
)
def test_calibration_refuses_small_or_single_class_sets(truth: np.ndarray, message: str) -> None:
    probabilities = np.full((len(truth), 3), 1 / 3)
    with pytest.raises(ClinicalError, match=message):
        fit_temperature(truth, probabilities)
    with pytest.raises(ClinicalError, match=message):
        operating_points(truth, probabilities, LABELS, {"a": "youden"})


def test_threshold_rules_meet_their_targets() -> None:
    rng = np.random.default_rng(3)
    positive = rng.random(500) < 0.3
    scores = np.clip(rng.normal(np.where(positive, 0.65, 0.35), 0.15), 0, 1)
    distinct = np.unique(scores)

    def figures(threshold: float) -> tuple[float, float]:
        called = scores >= threshold
        return called[positive].mean(), (~called[~positive]).mean()

    threshold = choose_threshold(positive, scores, "sensitivity>=0.9")
    assert figures(threshold)[0] >= 0.9
    assert figures(distinct[distinct > threshold][0])[0] < 0.9  # the best specificity reaching it
    threshold = choose_threshold(positive, scores, "specificity>=0.95")
    assert figures(threshold)[1] >= 0.95
    assert figures(distinct[distinct < threshold][-1])[1] < 0.95  # the best sensitivity keeping it
    youden = choose_threshold(positive, scores, "youden")
    best = max(
        ((scores >= t)[positive].mean() + (scores < t)[~positive].mean(), t) for t in np.unique(scores)
    )
    assert (youden >= 0) and (youden <= 1)
    assert (scores >= youden)[positive].mean() + (scores < youden)[~positive].mean() == pytest.approx(best[0])


def test_rules_parse_per_label_and_refuse_nonsense() -> None:
    assert parse_rules(["youden"], LABELS) == dict.fromkeys(LABELS, "youden")
    assert parse_rules(["youden"], ("normal", "fracture")) == {"fracture": "youden"}
    assert parse_rules(["b=sensitivity>=0.9", "c=specificity >= .95"], LABELS) == {
        "b": "sensitivity>=0.9",
        "c": "specificity>=.95",
    }
    for bad in ("accuracy>=0.9", "sensitivity>=2", "z=youden"):
        with pytest.raises(ClinicalError, match="threshold rule"):
            parse_rules([bad], LABELS)


def test_operating_points_in_the_card_decide_rows_and_old_cards_still_read(tmp_path: Path) -> None:
    card = ModelCard(name="m", architecture="resnet18", labels=LABELS, input_size=(64, 64))
    old = {
        key: value for key, value in card.to_dict().items() if key not in ("operating_points", "calibration")
    }
    assert ModelCard.from_dict(old) == card  # a card written before these fields existed
    points = {"b": OperatingPoint(0.3, "youden"), "c": OperatingPoint(0.6, "youden")}
    decided = card.replace(operating_points=points, calibration=Calibration(60, 1.2, 0.1, 0.05, 0.9, 0.8))
    decided.write(tmp_path)
    assert ModelCard.read(tmp_path) == decided
    assert card.decide({"a": 0.5, "b": 0.2, "c": 0.3}) == ("", None)
    assert decided.decide({"a": 0.5, "b": 0.2, "c": 0.3}) == ("negative", 0.6)
    assert decided.decide({"a": 0.1, "b": 0.35, "c": 0.55}) == ("b", 0.3)
    assert decided.decide({"a": 0.0, "b": 0.35, "c": 0.65}) == ("c", 0.6)
    with pytest.raises(ModelCardError, match="unknown label"):
        card.replace(operating_points={"z": OperatingPoint(0.5)})
    with pytest.raises(ModelCardError, match="threshold"):
        card.replace(operating_points={"a": OperatingPoint(1.5)})


def test_truth_files(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,region,sop_instance_uid\nx.dcm,knee,1.2.3\n")
    truth = read_truth(manifest)
    assert truth.column == "region"
    assert truth.label_of(ResultRow(str(tmp_path / "x.dcm"), "ok")) == "knee"  # relative to the CSV
    assert truth.label_of(ResultRow("elsewhere.dcm", "ok", sop_instance_uid="1.2.3")) == "knee"
    assert truth.label_of(ResultRow("elsewhere.dcm", "ok", sop_instance_uid="9")) is None
    cases = {
        "missing.csv": "No such file",
        "empty.csv": "no label column",
        "header.csv": "no rows",
        "nokey.csv": "none of the key columns sop_instance_uid, path, study_instance_uid",
    }
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("path,label\n")
    (tmp_path / "nokey.csv").write_text("file,label\nx,knee\n")
    for name, message in cases.items():
        with pytest.raises(ClinicalError, match=message) as raised:
            read_truth(tmp_path / name)
        assert "\n" not in str(raised.value)
    with pytest.raises(ClinicalError, match="no label column diagnosis"):
        read_truth(manifest, "diagnosis")


def test_scaled_is_the_model_at_a_new_temperature() -> None:
    logits = np.random.default_rng(5).normal(0, 3, (20, 4))
    served = _softmax(logits / 0.7)
    assert np.allclose(scaled(served, 2.0), _softmax(logits / 1.4), atol=1e-9)
    assert math.isclose(json.loads(json.dumps(float(scaled(served, 1.0)[0, 0]))), served[0, 0], rel_tol=1e-9)


def test_boxes_are_measured_only_where_there_are_boxes(tmp_path: Path) -> None:
    from radserve.client.classify import RunSummary
    from radserve.clinical.evaluate import evaluation_report, summary_lines
    from radserve.clinical.labeled import join_truth

    card = ModelCard(
        name="m", architecture="resnet18", labels=("fracture", "no_fracture"), input_size=(224, 224)
    )
    rows = [
        ResultRow(
            f"{k}.dcm", "ok", sop_instance_uid=str(k), label=label, probabilities={label: 0.9, other: 0.1}
        )
        for k, (label, other) in enumerate([("fracture", "no_fracture"), ("no_fracture", "fracture")])
    ]
    empty = tmp_path / "empty.csv"  # a system without boxes writes the column, empty
    empty.write_text("sop_instance_uid,label,box\n0,fracture,\n1,no_fracture,\n")
    report = evaluation_report(join_truth(card, rows, read_truth(empty), RunSummary(files=2)))
    assert "boxes" not in report and report["unit"] == "radiographs"
    assert not any(line.startswith("boxes") for line in summary_lines(report))
    boxed = tmp_path / "boxed.csv"
    boxed.write_text("sop_instance_uid,label,box\n0,fracture,1 1 4 4\n1,no_fracture,\n")
    report = evaluation_report(join_truth(card, rows, read_truth(boxed), RunSummary(files=2)))
    assert report["boxes"]["truth_boxes"] == 1 and report["boxes"]["map_50"] == 0.0  # nothing detected
