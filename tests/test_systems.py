"""The served systems' contracts: catalogue, export --system, refusals with their reasons."""

from __future__ import annotations

import csv
from pathlib import Path

import onnxruntime
import pytest
import torch

from radserve.cli import EXIT_FAILURE, EXIT_OK, main
from radserve.errors import ModelCardError
from radserve.export.architectures import ARCHITECTURES, build_model, start_residual_blocks_as_identity
from radserve.export.checkpoint import save_checkpoint
from radserve.export.pipeline import ExportRequest, export_checkpoint
from radserve.export.repo_check import check_repository
from radserve.export.train import TrainingPlan, demo_plan, train_system
from radserve.model_card import ModelCard
from radserve.systems import SPINE_VIEW_LABELS, SYSTEMS, get_system


def _checkpoint(
    path: Path, architecture: str, labels: tuple[str, ...], size: int, in_channels: int = 3
) -> Path:
    torch.manual_seed(0)
    card = ModelCard(
        name="c",
        architecture=architecture,
        labels=labels,
        input_size=(size, size),
        channels=1 if in_channels == 3 else in_channels,
    )
    save_checkpoint(path, build_model(architecture, len(labels), in_channels), card)
    return path


def test_catalogue_lists_the_five_studies(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(SYSTEMS) == [
        "spine-view",
        "spondylolisthesis",
        "body-region",
        "vertebral-fracture-mri",
        "fracture",
    ]
    assert len(SPINE_VIEW_LABELS) == 10 and len(set(SPINE_VIEW_LABELS)) == 10
    assert sum(label.startswith("ap_preop") for label in SPINE_VIEW_LABELS) == 2
    assert sum(label.startswith("lateral_postop") for label in SPINE_VIEW_LABELS) == 3
    assert get_system("vertebral-fracture-mri").channels == 6
    assert main(["systems"]) == EXIT_OK
    out = capsys.readouterr().out
    for system in SYSTEMS.values():
        assert system.name in out and system.architecture in out
    with pytest.raises(ModelCardError, match="unknown system 'nope'"):
        get_system("nope")


def test_contract_refusals_name_the_reason() -> None:
    spine = get_system("spine-view")
    card = ModelCard(name="x", architecture="efficientnet_b6", labels=("a", "b"), input_size=(132, 132))
    with pytest.raises(ModelCardError, match=r"has 10 classes .* the checkpoint has 2"):
        spine.apply(card, 3)
    card = card.replace(labels=SPINE_VIEW_LABELS)
    with pytest.raises(
        ModelCardError, match="first convolution must take 3 input channels; the checkpoint's takes 6"
    ):
        spine.apply(card, 6)
    with pytest.raises(ModelCardError, match="served with efficientnet_b6; the checkpoint is resnet18"):
        spine.apply(card.replace(architecture="resnet18"), 3)
    with pytest.raises(ModelCardError, match="trained at 100x100, not the same integer divisor"):
        spine.apply(card.replace(input_size=(100, 100)), 3)
    reordered = card.replace(labels=SPINE_VIEW_LABELS[::-1])
    with pytest.raises(ModelCardError, match="differ from the system's"):
        spine.apply(reordered, 3)
    bound = spine.apply(card, 3)
    assert (bound.system, bound.input_size, bound.network_input_size, bound.pooling) == (
        "spine-view",
        (528, 528),
        (132, 132),
        4,
    )
    mri = get_system("vertebral-fracture-mri")
    mri_card = ModelCard(
        name="m", architecture="resnet50", labels=("benign", "malignant"), input_size=(224, 224)
    )
    with pytest.raises(ModelCardError, match="must take 6 input channels; the checkpoint's takes 3"):
        mri.apply(mri_card, 3)
    assert mri.apply(mri_card, 6).channels == 6


def test_export_refuses_a_checkpoint_that_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = _checkpoint(tmp_path / "three.pt", "mobilenet_v3_small", ("a", "b", "c"), 128)
    code = main(["export", str(checkpoint), "--system", "fracture", "--repository", str(tmp_path / "repo")])
    assert code == EXIT_FAILURE
    assert "system 'fracture' has 2 classes" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "fracture").exists()


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_each_demo_plan_trains_the_contract_at_a_divisor_of_the_study_size(name: str) -> None:
    plan, system = demo_plan(name), get_system(name)
    assert plan.architecture == system.architecture
    assert (plan.input_size, plan.input_size) == system.demo_input_size
    assert system.input_size[0] % plan.input_size == 0 and system.input_size[1] % plan.input_size == 0


def test_unregularized_builds_keep_the_weights_and_drop_dropout_and_stochastic_depth() -> None:
    regular, demo = build_model("efficientnet_b0", 2), build_model("efficientnet_b0", 2, regularized=False)
    assert regular.state_dict().keys() == demo.state_dict().keys()
    rates = [
        getattr(m, "p", None) for m in demo.modules() if type(m).__name__ in ("Dropout", "StochasticDepth")
    ]
    assert rates and all(p == 0.0 for p in rates)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_residual_block_of_a_demo_starts_as_the_identity(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_model(architecture, 3, regularized=False)
    blocks = start_residual_blocks_as_identity(model)
    seen: list[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]] = []
    for module in model.modules():
        if type(module).__name__ in ("BasicBlock", "Bottleneck") or getattr(module, "use_res_connect", False):
            module.register_forward_hook(lambda block, given, output: seen.append((block, given[0], output)))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
        assert blocks == len(seen) > 0
        for block, given, answered in seen:  # a ResNet block: ReLU(shortcut(x) + branch(x))
            shortcut = getattr(block, "downsample", None)
            expected = (shortcut(given) if shortcut else given).relu() if hasattr(block, "relu") else given
            torch.testing.assert_close(answered, expected)
    other = build_model(architecture, 3, regularized=False)
    assert other.state_dict().keys() == model.state_dict().keys()  # the same network to export


def test_a_trained_demo_exports_at_the_study_size(tmp_path: Path) -> None:
    plan = TrainingPlan(
        architecture="mobilenet_v3_small",
        input_size=128,
        train_images=8,
        held_out_images=4,
        epochs=1,
        batch_size=4,
    )
    report = train_system("fracture", plan, tmp_path / "fracture.pt")
    assert report.system == "fracture" and report.held_out_images == 4
    assert report.held_out_macro_auroc is not None and 0.0 <= report.held_out_macro_auroc <= 1.0
    result = export_checkpoint(
        ExportRequest(tmp_path / "fracture.pt", "fracture", tmp_path, samples=4, system="fracture")
    )
    card = ModelCard.read(result.version_dir)
    assert (card.system, card.input_size, card.network_input_size) == ("fracture", (384, 384), (128, 128))
    assert card.parity.runtimes["onnxruntime_fp32"].top1_agreement == 1.0
    session = onnxruntime.InferenceSession(str(result.version_dir / "model.onnx"))
    (wire,) = session.get_inputs()
    assert wire.shape[1:] == [1, 384, 384]
    assert check_repository(tmp_path).ok


def test_synth_writes_each_radiograph_system_with_its_truth(tmp_path: Path) -> None:
    for system in ("spine-view", "spondylolisthesis", "fracture"):
        args = ["synth", str(tmp_path / system), "--system", system, "--count", "4", "--matrix", "160", "128"]
        assert main(args) == EXIT_OK
        rows = list(csv.DictReader((tmp_path / system / "manifest.csv").open()))
        labels = get_system(system).labels
        assert [row["label"] for row in rows] == [labels[i % len(labels)] for i in range(4)]
        assert all(Path(row["path"]).is_file() for row in rows)
        assert all(bool(row["box"]) == (row["label"] == "fracture") for row in rows)
    again = tmp_path / "again"
    main(["synth", str(again), "--system", "spine-view", "--count", "4", "--matrix", "160", "128"])
    first = (tmp_path / "spine-view" / "spine-view_00003.dcm").read_bytes()
    assert (again / "spine-view_00003.dcm").read_bytes() == first


def test_mri_system_refuses_a_three_channel_network(tmp_path: Path) -> None:
    labels = get_system("vertebral-fracture-mri").labels
    three = _checkpoint(tmp_path / "mri3.pt", "resnet50", labels, 112)
    request = ExportRequest(three, "mri", tmp_path / "repo", samples=4, system="vertebral-fracture-mri")
    with pytest.raises(ModelCardError, match="takes 6 channels"):
        export_checkpoint(request)
