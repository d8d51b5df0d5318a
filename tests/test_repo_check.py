"""``radserve repo check``: a good repository passes; each kind of breakage is named, exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest

from radserve.export.pipeline import ExportResult
from radserve.export.repo_check import check_repository
from radserve.model_card import ModelCard

MODEL = "tiny"  # conftest's tiny_export


@pytest.fixture
def good(repository: Path, tiny_export: ExportResult, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(repository / MODEL, copy / MODEL)
    return copy


def _radserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "radserve", *args], capture_output=True, text=True, timeout=120
    )


def test_good_repository_passes(good: Path) -> None:
    report = check_repository(good)
    assert report.ok, report.render()
    assert report.models[0].target == "embedded" and report.models[0].versions == [1]
    done = _radserve("repo", "check", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "repository ok" in done.stdout


def _labels_count(model: Path) -> None:
    (model / "labels.txt").write_text("only\n")


def _config_garbage(model: Path) -> None:
    (model / "config.pbtxt").write_text('name: "tiny"\nno_such_field: 1\n')


def _card_name(model: Path) -> None:
    path = model / "1" / "model_card.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"name": "other"}))


def _missing_onnx(model: Path) -> None:
    (model / "1" / "model.onnx").unlink()


def _no_versions(model: Path) -> None:
    shutil.rmtree(model / "1")


def _onnx_input_size(model: Path) -> None:
    path = model / "1" / "model.onnx"
    graph = onnx.load(str(path))
    graph.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 99
    onnx.save(graph, str(path))


def _gpu_instances(model: Path) -> None:
    path = model / "config.pbtxt"
    path.write_text(path.read_text().replace("KIND_CPU", "KIND_GPU"))


def _card_labels(model: Path) -> None:
    card = ModelCard.read(model / "1")
    card.replace(labels=tuple(reversed(card.labels))).write(model / "1")


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "labels count": (_labels_count, "labels.txt has 1 labels, the output has 5"),
    "config schema": (_config_garbage, "does not parse with Triton's schema"),
    "card name": (_card_name, "model card name 'other'"),
    "missing onnx": (_missing_onnx, "no model.onnx"),
    "no versions": (_no_versions, "no numbered version folder"),
    "onnx shape": (_onnx_input_size, "image has shape [None, 1, 99, 64]"),
    "card labels": (_card_labels, "model card labels differ from labels.txt"),
    "instance kind": (_gpu_instances, "instance groups run on the gpu, target 'embedded' serves on cpu"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_repository_is_named(good: Path, breakage: str) -> None:
    breaker, expected = BREAKAGES[breakage]
    breaker(good / MODEL)
    report = check_repository(good)
    assert not report.ok
    text = report.render()
    assert expected in text, text


def test_cli_exit_code_two_and_per_model_report(good: Path) -> None:
    shutil.copytree(good / MODEL, good / "second")  # its config still names "tiny"
    (good / MODEL / ".staging-x").mkdir()
    done = _radserve("repo", "check", str(good))
    assert done.returncode == 2
    assert "second [embedded] versions 1: FAILED" in done.stdout
    assert "config name 'tiny' differs from the folder name 'second'" in done.stdout
    assert "tiny [embedded] versions 1: ok" in done.stdout
    assert "leftover folders of an interrupted export: .staging-x" in done.stdout
    assert _radserve("repo", "check", str(good / "absent")).returncode == 2


def test_cpu_host_exports_and_checks_the_cpu_onnxruntime_target(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """`radserve export --target onnxruntime --device cpu` on this CPU-only host: KIND_CPU, checked ok.

    The wheel's tritonserver has no ONNX Runtime backend (docs/how-to/tensorrt-ngc.md): Triton's
    schema, the ONNX graph and the model folder are what can be checked here.
    """
    from tritonclient.grpc import model_config_pb2 as pb

    from radserve.export.model_config import parse_config

    repository = tmp_path / "repo"
    done = _radserve(
        "export", str(tiny_checkpoint), "--name", "cpu_ort", "--repository", str(repository),
        "--target", "onnxruntime", "--device", "cpu", "--samples", "8",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    config = parse_config((repository / "cpu_ort" / "config.pbtxt").read_text())
    assert (config.platform, config.default_model_filename) == ("onnxruntime_onnx", "model.onnx")
    assert [group.kind for group in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    report = check_repository(repository)
    assert report.ok, report.render()
    assert report.models[0].target == "onnxruntime/cpu"
    checked = _radserve("repo", "check", str(repository))
    assert checked.returncode == 0 and "cpu_ort [onnxruntime/cpu] versions 1: ok" in checked.stdout
    refused = _radserve(
        "export", str(tiny_checkpoint), "--name", "x", "--target", "tensorrt", "--device", "cpu"
    )
    assert refused.returncode != 0 and "target 'tensorrt' serves on gpu, not 'cpu'" in refused.stderr
