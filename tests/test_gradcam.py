"""Grad-CAM served by Triton vs PyTorch autograd Grad-CAM, for the three study architectures.

Each architecture's companion (random weights, 96 px inputs) is published by export and served by
the real tritonserver; ``radserve explain`` asks it for the maps over gRPC. The reference here is
computed independently: forward hook on the last convolutional block, autograd gradient of the class
logit, channel weights = spatial mean of the gradient, ReLU of the weighted sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch

from radserve.cli import main
from radserve.clinical.explain import explain_file
from radserve.export.architectures import build_model
from radserve.export.gradcam import build_gradcam, gradcam_name
from radserve.export.parity import torch_probabilities
from radserve.export.repo_check import check_repository
from radserve.export.samples import sample_images
from radserve.model_card import ModelCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.dataset import SyntheticRecord

ARCHITECTURES = ("resnet18", "efficientnet_b0", "mobilenet_v3_small")
LABELS = ("shoulder", "elbow", "hand", "pelvis", "knee")
SIZE = 96
Served = tuple[TritonServer, dict[str, torch.nn.Module]]  # the server and each architecture's network


def _network(architecture: str) -> torch.nn.Module:
    """Random weights with batch-norm statistics spread out, so that the maps are not flat."""
    torch.manual_seed(11)
    network = build_model(architecture, len(LABELS))
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return network.eval()


def _last_block(network: torch.nn.Module) -> torch.nn.Module:
    return network.layer4 if hasattr(network, "layer4") else network.features[-1]


def reference_gradcam(network: torch.nn.Module, card: ModelCard, image: np.ndarray, index: int) -> np.ndarray:
    """Autograd Grad-CAM of class ``index`` for one wire image ``uint8 [1, H, W]``."""
    mean = torch.tensor(card.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1)
    rgb = torch.from_numpy(image).float().div(255).expand(3, -1, -1).unsqueeze(0)
    saved: dict[str, torch.Tensor] = {}
    hook = _last_block(network).register_forward_hook(lambda m, i, output: saved.update(a=output))
    try:
        logits = network((rgb - mean) / std)
    finally:
        hook.remove()
    activations = saved["a"]
    (gradient,) = torch.autograd.grad(logits[0, index], activations)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations).sum(dim=1))[0].detach().numpy()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    repository = tmp_path_factory.mktemp("gradcam-repository")
    work = tmp_path_factory.mktemp("gradcam-work")
    networks = {}
    for architecture in ARCHITECTURES:
        network = _network(architecture)
        card = ModelCard(name=architecture, architecture=architecture, labels=LABELS, input_size=(SIZE, SIZE))
        images = sample_images(card, 4)
        build_gradcam(network, card, images, torch_probabilities(network, card, images), work).publish(
            repository
        )
        networks[architecture] = network
    log = tmp_path_factory.mktemp("gradcam-triton") / "tritonserver.log"
    with TritonServer(repository, ports=free_ports(), log_file=log) as server:
        yield server, networks


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_served_gradcam_matches_autograd(
    served: Served,
    dicom_records: list[SyntheticRecord],
    architecture: str,
) -> None:
    server, networks = served
    card = ModelCard(name=architecture, architecture=architecture, labels=LABELS, input_size=(SIZE, SIZE))
    correlations = []
    for record in dicom_records[:3]:
        for label in LABELS:
            explanation = explain_file(Path(record.path), architecture, server.grpc_url, label)
            index = LABELS.index(label)
            expected = reference_gradcam(networks[architecture], card, explanation.image[np.newaxis], index)
            assert explanation.raw_map.shape == expected.shape
            if expected.std() == 0:  # ReLU left nothing of this class: the served map is empty too
                assert np.allclose(explanation.raw_map, expected, atol=1e-6 * (1 + np.abs(expected).max()))
                continue
            correlations.append(float(np.corrcoef(expected.ravel(), explanation.raw_map.ravel())[0, 1]))
    print(f"{architecture}: {len(correlations)} maps, Pearson r min {min(correlations):.6f}")
    assert len(correlations) >= 3, "too few non-empty maps to test"
    assert min(correlations) >= 0.99


def test_explain_writes_overlay_and_secondary_capture(
    served: Served,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, _ = served
    source = dicom_records[0].path
    output = tmp_path / "overlay.png"
    explain = ["explain", source, "--model", "resnet18", "--output", str(output), "--url", server.grpc_url]
    code = main([*explain, "--dicom"])
    assert code == 0
    overlay = cv2.imread(str(output))
    assert overlay.shape == (SIZE, SIZE, 3)
    assert (overlay[..., 0] != overlay[..., 2]).any()  # coloured: the heat map is drawn
    capture = pydicom.dcmread(output.with_suffix(".dcm"))
    original = pydicom.dcmread(source, stop_before_pixels=True)
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert capture.StudyInstanceUID == original.StudyInstanceUID
    assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert capture.pixel_array.shape == (SIZE, SIZE, 3)
    assert main([*explain, "--label", "skull"]) == 2  # not a label of the model: one-line error
    assert main([*explain[:3], "unknown", *explain[4:]]) == 2  # no companion: named, with the fix
    assert "--gradcam" in capsys.readouterr().err


def test_repository_with_companions_passes_repo_check(
    served: Served,
) -> None:
    server, _ = served
    report = check_repository(server.repository)
    assert report.ok, report.render()
    assert {gradcam_name(architecture) for architecture in ARCHITECTURES} <= {
        model.name for model in report.models
    }
