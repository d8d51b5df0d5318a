"""``radserve tune``'s CPU engine choice: the decision on given figures, ``--apply`` publishing the
faster engine with its card's record, and one real short measurement of the tiny model."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from radserve.errors import ModelCardError
from radserve.export.model_config import parse_config
from radserve.export.pipeline import ExportResult
from radserve.export.repo_check import check_repository
from radserve.loadtests import engine_choice, tune
from radserve.loadtests.engine_choice import EngineMeasurement, choose_engine
from radserve.model_card import CPU_ENGINE_PARAMETER, MODEL_CARD_PARAMETER, CpuEngineChoice, ModelCard
from radserve.settings import SETTINGS

TINY_MODEL = "tiny"
PASSED = {"reference": "onnxruntime fp32 (served)", "top1_agreement": 1.0, "max_abs_diff": 1e-7}


def _tune_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    return parser.parse_args(argv)


def _measured(onnxruntime: float, openvino: float, openvino_passes: bool = True) -> list[EngineMeasurement]:
    return [
        EngineMeasurement("onnxruntime", onnxruntime, True, PASSED),
        EngineMeasurement("openvino", openvino, openvino_passes, PASSED),
    ]


def test_another_engine_is_chosen_only_when_faster_by_the_gain_and_passing_the_gate() -> None:
    gain = SETTINGS.export.cpu_engine_min_gain
    faster = 100 * (1 + gain)
    assert choose_engine("onnxruntime", _measured(100, faster)).engine == "openvino"  # type: ignore[union-attr]
    assert choose_engine("onnxruntime", _measured(100, faster - 0.5)) is None  # below the gain
    assert choose_engine("onnxruntime", _measured(100, 2 * faster, openvino_passes=False)) is None
    assert choose_engine("openvino", _measured(2 * faster, 100)).engine == "onnxruntime"  # type: ignore[union-attr]
    assert choose_engine("openvino", _measured(100, 100)) is None  # the current engine is kept
    assert choose_engine("onnxruntime", _measured(100, 150)[1:]) is None  # current not measured


def test_the_card_round_trips_the_choice_and_refuses_an_incomplete_one(tiny_export: ExportResult) -> None:
    record = CpuEngineChoice(
        "openvino", "onnxruntime", 1.5, {"onnxruntime": 100.0, "openvino": 150.0}, PASSED
    )
    card = tiny_export.card.replace(cpu_engine="openvino", cpu_engine_choice=record)
    assert ModelCard.from_json(card.to_json()) == card
    with pytest.raises(ModelCardError, match="cpu engine choice needs"):
        ModelCard.from_dict(json.loads(card.to_json()) | {"cpu_engine_choice": {"engine": "openvino"}})


def test_tune_apply_publishes_the_faster_engine_as_the_next_version(
    repository: Path, tiny_export: ExportResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = tmp_path / "repository"
    shutil.copytree(repository / TINY_MODEL, ours / TINY_MODEL)  # the session's repository stays as it is
    before = ModelCard.from_repository(ours, TINY_MODEL)
    measured = _measured(100.0, 150.0)
    monkeypatch.setattr(engine_choice, "measure_engines", lambda *_: measured)  # injected figures
    out = tmp_path / "tune.json"
    assert (
        tune.main(
            _tune_args(TINY_MODEL, "--repository", str(ours), "--engines-only", "--apply", "--out", str(out))
        )
        == 0
    )
    versions = sorted(int(p.name) for p in (ours / TINY_MODEL).iterdir() if p.name.isdigit())
    newest = ours / TINY_MODEL / str(versions[-1])
    card = ModelCard.read(newest)
    assert len(versions) >= 2 and versions[-1] == versions[-2] + 1
    assert (before.cpu_engine, card.cpu_engine) == ("onnxruntime", "openvino")
    assert card.cpu_engine_choice is not None and card.cpu_engine_choice.ratio == 1.5
    assert card.cpu_engine_choice.images_per_second == {"onnxruntime": 100.0, "openvino": 150.0}
    assert card.replace(cpu_engine=before.cpu_engine, cpu_engine_choice=None, parity=before.parity) == before
    config = parse_config((ours / TINY_MODEL / "config.pbtxt").read_text())
    assert config.parameters[CPU_ENGINE_PARAMETER].string_value == "openvino"
    assert ModelCard.from_json(config.parameters[MODEL_CARD_PARAMETER].string_value) == card
    previous = ours / TINY_MODEL / str(versions[-2])
    assert (newest / "model.onnx").stat().st_ino == (previous / "model.onnx").stat().st_ino  # linked
    assert ModelCard.read(previous) == before  # the served version is untouched
    # each version runs its own card's engine: the config's parameters are the newest version's
    monkeypatch.setitem(
        sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils")
    )
    embedded = importlib.import_module("radserve.export.embedded_model")
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert embedded._engine(str(newest), parameters) == ("openvino", "f32")
    assert embedded._engine(str(previous), parameters) == ("onnxruntime", "f32")
    report = check_repository(ours)
    assert report.ok, report.render()
    assert json.loads(out.read_text())["engine"]["choice"]["engine"] == "openvino"


def test_tune_engines_only_measures_both_engines_of_the_tiny_model(
    repository: Path, tiny_export: ExportResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tune.json"
    argv = ("--repository", str(repository), "--engines-only", "--seconds", "0.1", "--repeats", "1")
    assert tune.main(_tune_args(TINY_MODEL, *argv, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    engine = json.loads(out.read_text())["engine"]
    measured = [EngineMeasurement(**m) for m in engine["measured"]]
    assert [m.engine for m in measured] == ["onnxruntime", "openvino"]
    assert all(m.images_per_second > 0 and m.passes_gate for m in measured)  # fp32 on both: the fp32 gate
    choice = choose_engine(engine["current"], measured)
    assert (engine.get("choice") or {}).get("engine") == (choice.engine if choice else None)
    assert "engine: " in printed and "published" not in printed  # no --apply: recommended only
    assert ModelCard.from_repository(repository, TINY_MODEL).cpu_engine == "onnxruntime"
