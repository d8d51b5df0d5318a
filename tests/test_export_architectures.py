"""Every supported architecture and every source format exports with a dynamic batch and passes parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from radserve.errors import ModelCardError
from radserve.export.architectures import ARCHITECTURES, build_model
from radserve.export.checkpoint import save_checkpoint
from radserve.export.model_config import parse_config
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.repo_check import check_repository
from radserve.export.sources import ProgramMetadata
from radserve.model_card import MODEL_VERSION_PARAMETER, ModelCard, model_versions
from radserve.systems import get_system

SIZE = 64  # the smallest input every architecture's downsampling handles, fast on 2 cores
LABELS = ("a", "b", "c")


def _network(architecture: str) -> torch.nn.Module:
    """Random init, with a head that separates classes (a fresh head answers near-uniformly)."""
    torch.manual_seed(0)
    network = build_model(architecture, len(LABELS))
    head = [module for module in network.modules() if isinstance(module, torch.nn.Linear)][-1]
    torch.nn.init.normal_(head.weight, std=1.0)
    return network.eval()


# exported once for the suite by the spondylolisthesis system's fixture (tests/conftest.py)
SHARED_EXPORTS = {"efficientnet_v2_m": "spondylolisthesis_export"}


@pytest.fixture(scope="module")
def spondylolisthesis_export(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The spondylolisthesis system's EfficientNetV2-M (random init, 96 px) exported with its contract
    and Grad-CAM companion: the one export of the largest-but-one architecture, shared by its parity
    test and the Grad-CAM companion's (with the companion it takes ~50 s on 2 cores)."""
    folder = tmp_path_factory.mktemp("spondylolisthesis")
    labels = get_system("spondylolisthesis").labels
    torch.manual_seed(0)
    card = ModelCard(name="c", architecture="efficientnet_v2_m", labels=labels, input_size=(96, 96))
    checkpoint = folder / "spondylolisthesis.pt"
    save_checkpoint(checkpoint, build_model("efficientnet_v2_m", len(labels)), card)
    request = ExportRequest(
        checkpoint, "spondylolisthesis", folder / "repo", samples=2, system="spondylolisthesis"
    )
    return export_checkpoint(request)


def test_spondylolisthesis_is_exported_with_its_grad_cam_companion(
    spondylolisthesis_export: ExportResult,
) -> None:
    result = spondylolisthesis_export
    repository = result.version_dir.parent.parent
    assert result.gradcam_dir == repository / "spondylolisthesis_gradcam" / "1"
    companion = ModelCard.read(result.gradcam_dir)
    assert companion.input_size == (480, 480) and companion.network_input_size == (96, 96)
    assert companion.parity.gradcam.min_pearson >= 0.99
    assert check_repository(repository).ok


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_architecture_exports_and_passes_parity(
    architecture: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if architecture in SHARED_EXPORTS:
        result: ExportResult = request.getfixturevalue(SHARED_EXPORTS[architecture])
        size = result.card.input_size
        labels = result.card.labels
    else:
        size, labels = (SIZE, SIZE), LABELS
        card = ModelCard(name="m", architecture=architecture, labels=LABELS, input_size=size)
        checkpoint = tmp_path / f"{architecture}.pt"
        save_checkpoint(checkpoint, _network(architecture), card)
        result = export_checkpoint(ExportRequest(checkpoint, architecture, tmp_path / "repo", samples=4))
    assert result.card.architecture == architecture
    assert result.parity.top1_agreement == 1.0
    assert result.parity.max_abs_diff < 1e-3
    recorded = result.card.parity.runtimes["onnxruntime_fp32"]
    assert recorded.max_rel_diff == pytest.approx(result.parity.max_rel_diff)
    assert result.parity.max_rel_diff >= result.parity.max_abs_diff  # probabilities are at most 1
    session = onnxruntime.InferenceSession(str(result.version_dir / "model.onnx"))
    images = np.random.default_rng(0).integers(0, 256, (3, 1, *size), dtype=np.uint8)
    (probabilities,) = session.run(None, {"image": images})
    assert probabilities.shape == (3, len(labels))
    assert check_repository(result.version_dir.parent.parent).ok


def _program_metadata(tmp_path: Path, labels: tuple[str, ...] = LABELS) -> ProgramMetadata:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("".join(f"{label}\n" for label in labels))
    return ProgramMetadata(labels_file=labels_file, input_size=(SIZE, SIZE), resize="letterbox")


@pytest.mark.parametrize("kind", ["torchscript", "torch.export"])
def test_torchscript_and_exported_program_sources(kind: str, tmp_path: Path) -> None:
    network = _network("resnet18")
    example = torch.zeros((2, 3, SIZE, SIZE))
    if kind == "torchscript":
        source = tmp_path / "model.ts"
        torch.jit.trace(network, example).save(str(source))
    else:
        source = tmp_path / "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(network, (example,), dynamic_shapes=({0: batch},)), str(source))
    request = ExportRequest(
        source, "byo", tmp_path / "repo", samples=4, program=_program_metadata(tmp_path), keep_versions=1
    )
    first = export_checkpoint(request)
    assert first.card.architecture == kind
    assert first.card.labels == LABELS and first.card.resize == "letterbox"
    assert first.parity.top1_agreement == 1.0
    config_before = (tmp_path / "repo" / "byo" / "config.pbtxt").read_text()
    second = export_checkpoint(request)  # re-export: a new version, the older one pruned
    assert second.version_dir.name == "2"
    assert model_versions(tmp_path / "repo" / "byo") == [2]
    config_after = parse_config((tmp_path / "repo" / "byo" / "config.pbtxt").read_text())
    assert config_after.parameters.pop(MODEL_VERSION_PARAMETER).string_value == "2"  # it names its version
    expected = parse_config(config_before)
    assert expected.parameters.pop(MODEL_VERSION_PARAMETER).string_value == "1"
    assert config_after == expected  # and is otherwise the same
    assert check_repository(tmp_path / "repo").ok


def test_program_refusals(tmp_path: Path) -> None:
    network = _network("resnet18")
    source = tmp_path / "model.ts"
    torch.jit.trace(network, torch.zeros((2, 3, SIZE, SIZE))).save(str(source))
    wrong = ExportRequest(
        source, "byo", tmp_path / "repo", samples=2, program=_program_metadata(tmp_path, ("a", "b"))
    )
    with pytest.raises(ModelCardError, match="labels file names 2 classes"):
        export_checkpoint(wrong)
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"nope")
    with pytest.raises(ModelCardError, match=r"cannot be loaded as a torch\.export program"):
        export_checkpoint(
            ExportRequest(garbage, "byo", tmp_path / "repo", program=_program_metadata(tmp_path))
        )
    assert not (tmp_path / "repo" / "byo").exists()
