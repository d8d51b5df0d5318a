"""Session fixtures: the whole path built once for real (synth → tiny training → export → serve)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.train import TrainingPlan, TrainingReport, train
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.dataset import SyntheticRecord, write_synthetic_set

TINY_MODEL = "tiny"


@pytest.fixture(scope="session")
def dicom_records(tmp_path_factory: pytest.TempPathFactory) -> list[SyntheticRecord]:
    """Fifteen synthetic radiographs, a share of them compressed, in one folder."""
    folder = tmp_path_factory.mktemp("dicom")
    return write_synthetic_set(folder, 15, seed=7, matrix=(320, 256), compressed_share=0.4)


@pytest.fixture(scope="session")
def dicom_folder(dicom_records: list[SyntheticRecord]) -> Path:
    return Path(dicom_records[0].path).parent


@pytest.fixture(scope="session")
def tiny_plan() -> TrainingPlan:
    """A ResNet-18 trained for seconds at 64 px (identity-start blocks, as every fixture was made)."""
    return TrainingPlan(
        input_size=64,
        train_images=40,
        held_out_images=10,
        epochs=1,
        batch_size=20,
        matrix=(256, 208),
        identity_start=True,
    )


@pytest.fixture(scope="session")
def tiny_training(
    tiny_plan: TrainingPlan, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainingReport]:
    """The tiny plan trained: real weights, real checkpoint format."""
    checkpoint = tmp_path_factory.mktemp("checkpoints") / "tiny.pt"
    return checkpoint, train(tiny_plan, checkpoint)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_training: tuple[Path, TrainingReport]) -> Path:
    return tiny_training[0]


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    return tmp_path_factory.mktemp("repository")


@pytest.fixture(scope="session")
def tiny_export(repository: Path, tiny_checkpoint: Path) -> ExportResult:
    return export_checkpoint(ExportRequest(tiny_checkpoint, TINY_MODEL, repository, samples=10))


@pytest.fixture(scope="session")
def triton(
    repository: Path, tiny_export: ExportResult, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    """The real tritonserver from the nvidia-pytriton wheel, on free loopback ports."""
    log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
    with TritonServer(repository, ports=free_ports(), log_file=log) as server:
        yield server
