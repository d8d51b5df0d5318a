"""Export of a real (tiny) trained checkpoint: layout, dynamic batch, parity gate, versions, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from radserve.errors import ExportError, ModelCardError
from radserve.export.checkpoint import load_checkpoint, save_checkpoint
from radserve.export.parity import compare, gate
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.train import TrainingPlan, TrainingReport, train
from radserve.model_card import ModelCard, model_versions


def test_tiny_training_learns_something(tiny_training: tuple[Path, TrainingReport]) -> None:
    _, report = tiny_training
    assert report.held_out_images == 10
    assert np.isfinite(report.final_train_loss)
    correct = report.held_out_accuracy * report.held_out_images  # a count of held-out images
    assert correct == pytest.approx(round(correct)) and 0 <= round(correct) <= report.held_out_images


def test_one_plan_trains_the_same_weights(
    tiny_plan: TrainingPlan, tiny_training: tuple[Path, TrainingReport], tmp_path: Path
) -> None:
    checkpoint, report = tiny_training
    again = train(tiny_plan, tmp_path / "again.pt")
    first = load_checkpoint(checkpoint, "first").model.state_dict()
    second = load_checkpoint(tmp_path / "again.pt", "second").model.state_dict()
    assert first.keys() == second.keys()
    assert [name for name in first if not torch.equal(first[name], second[name])] == []
    assert again.held_out_accuracy == report.held_out_accuracy
    assert again.final_train_loss == report.final_train_loss


def test_published_model_folder(tiny_export: ExportResult, repository: Path) -> None:
    model_dir = repository / "tiny"
    assert tiny_export.version_dir == model_dir / "1"
    assert (model_dir / "labels.txt").read_text().split() == list(tiny_export.card.labels)
    for name in ("model.onnx", "model.py", "model_card.json"):
        assert (model_dir / "1" / name).is_file(), name
    assert not list(model_dir.glob(".staging-*"))
    card = ModelCard.read(model_dir / "1")
    assert card.parity.runtimes["onnxruntime_fp32"].top1_agreement == 1.0
    assert card.checkpoint_sha256 and card.tool_versions["torch"]


def test_onnx_takes_any_batch_of_uint8_images(tiny_export: ExportResult) -> None:
    session = onnxruntime.InferenceSession(str(tiny_export.version_dir / "model.onnx"))
    for batch in (1, 5):
        images = np.random.default_rng(batch).integers(0, 256, (batch, 1, 64, 64), dtype=np.uint8)
        (probabilities,) = session.run(None, {"image": images})
        assert probabilities.shape == (batch, 5)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_re_export_adds_a_version_and_keeps_the_old(tiny_checkpoint: Path, tmp_path: Path) -> None:
    request = ExportRequest(tiny_checkpoint, "again", tmp_path, samples=4)
    export_checkpoint(request)
    second = export_checkpoint(request)
    assert model_versions(tmp_path / "again") == [1, 2]
    assert second.version_dir.name == "2"


def test_gate_refuses_disagreement() -> None:
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    candidate = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]])
    report = compare(reference, candidate, "pytorch fp32")
    assert report.top1_agreement == pytest.approx(2 / 3)
    assert report.max_abs_diff == pytest.approx(0.5)
    with pytest.raises(ExportError, match="top-1 agreement"):
        gate(report, min_top1=1.0, max_abs_diff=None, what="m")
    with pytest.raises(ExportError, match="max abs"):
        gate(report, min_top1=0.5, max_abs_diff=0.1, what="m")
    gate(report, min_top1=0.5, max_abs_diff=0.6, what="m")


def test_refuses_missing_foreign_and_mismatched_checkpoints(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt", "m")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelCardError, match="cannot be loaded"):
        load_checkpoint(garbage, "m")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(ModelCardError, match="not a radserve-checkpoint"):
        load_checkpoint(plain, "m")
    loaded = load_checkpoint(tiny_checkpoint, "m")
    wrong_labels = tmp_path / "wrong-labels.pt"
    save_checkpoint(wrong_labels, loaded.model, loaded.card.replace(labels=("a", "b", "c")))
    with pytest.raises(ModelCardError, match="do not fit resnet18 with 3 labels"):
        load_checkpoint(wrong_labels, "m")
    unknown = tmp_path / "unknown-arch.pt"
    save_checkpoint(unknown, loaded.model, loaded.card.replace(architecture="vgg11"))
    with pytest.raises(ModelCardError, match="unknown architecture"):
        load_checkpoint(unknown, "m")
