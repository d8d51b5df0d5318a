"""Where an export starts: a radserve checkpoint, a TorchScript file or a ``torch.export`` program.

A radserve checkpoint (``export/checkpoint.py``) carries its own serving metadata. A TorchScript
file or a ``.pt2`` program carries only the network, so its metadata comes from the command line
(:class:`ProgramMetadata`: ``--labels labels.txt --input-size H W [--resize ...]``). Either way the
network takes normalized float RGB ``[B, 3, H, W]`` and returns logits ``[B, C]``; export wraps it
in the serving graph (UINT8 wire input, probabilities out). See docs/how-to/export.md.
"""

from __future__ import annotations

import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from radserve.errors import ModelCardError
from radserve.export.checkpoint import LoadedCheckpoint, load_checkpoint
from radserve.export.hashing import file_sha256
from radserve.model_card import ModelCard, ResizeMode
from radserve.settings import SETTINGS

TORCHSCRIPT_ARCHITECTURE = "torchscript"
EXPORTED_PROGRAM_ARCHITECTURE = "torch.export"
EXPORTED_PROGRAM_SUFFIX = ".pt2"


@dataclass(frozen=True)
class ProgramMetadata:
    """Serving metadata for a TorchScript file or ``.pt2`` program (not needed for a checkpoint)."""

    labels_file: Path
    input_size: tuple[int, int]
    resize: ResizeMode = "stretch"
    mean: tuple[float, float, float] = SETTINGS.export.mean
    std: tuple[float, float, float] = SETTINGS.export.std
    temperature: float = 1.0


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per non-empty line, in output order."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ModelCardError(f"cannot read labels file {path}: {error.strerror}") from None
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise ModelCardError(f"labels file {path} holds no label")
    return labels


def load_source(path: Path, name: str, program: ProgramMetadata | None = None) -> LoadedCheckpoint:
    """The network to export and its model card, from any of the three source formats."""
    if program is None:
        return load_checkpoint(path, name)
    if not path.is_file():
        raise ModelCardError(f"model file {path} does not exist")
    card = ModelCard(
        name=name,
        architecture="",  # set below
        labels=read_labels(program.labels_file),
        input_size=program.input_size,
        resize=program.resize,
        mean=program.mean,
        std=program.std,
        temperature=program.temperature,
        checkpoint_sha256=file_sha256(path),
    )
    height, width = card.input_size
    example = torch.zeros((2, 3, height, width), dtype=torch.float32)
    if path.suffix == EXPORTED_PROGRAM_SUFFIX:
        card = card.replace(architecture=EXPORTED_PROGRAM_ARCHITECTURE)
        network = _load_exported_program(path)
    elif _is_torchscript(path):
        card = card.replace(architecture=TORCHSCRIPT_ARCHITECTURE)
        network = _load_torchscript(path, example)
    else:
        raise ModelCardError(
            f"{path} is neither a TorchScript archive nor a torch.export program (.pt2); "
            "a radserve checkpoint is given without --labels"
        )
    _check_outputs(network, example, card, path)
    return LoadedCheckpoint(model=network, card=card)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(entry.endswith("constants.pkl") or "/code/" in entry for entry in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    """An unlifted ``torch.export`` module refuses ``train()``; it is already in inference form."""
    module.train = types.MethodType(lambda self, mode=True: self, module)  # type: ignore[method-assign]  # on purpose
    return module


def _load_exported_program(path: Path) -> torch.nn.Module:
    try:
        program = torch.export.load(str(path))
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise ModelCardError(f"{path} cannot be loaded as a torch.export program: {error}") from None
    if len(program.graph_signature.user_inputs) != 1:
        raise ModelCardError(
            f"{path}: the program takes {len(program.graph_signature.user_inputs)} inputs; "
            "expected one image tensor [B, 3, H, W]"
        )
    return _frozen(program.module())


def _load_torchscript(path: Path, example: torch.Tensor) -> torch.nn.Module:
    """TorchScript → ``torch.export`` program (dynamo's ONNX exporter cannot trace a ScriptModule)."""
    from torch._export.converter import TS2EPConverter

    try:
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as error:
        raise ModelCardError(f"{path} cannot be loaded as TorchScript: {error}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = TS2EPConverter(scripted, (example,)).convert()
        except Exception as error:
            raise ModelCardError(f"{path}: TorchScript cannot be converted for export: {error}") from None
    return _frozen(program.module())


def _check_outputs(network: torch.nn.Module, example: torch.Tensor, card: ModelCard, path: Path) -> None:
    try:
        with torch.inference_mode():
            output = network(example)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelCardError(
            f"{path}: the network does not run on float [2, 3, {card.input_size[0]}, {card.input_size[1]}] "
            f"(is the batch axis dynamic?): {first}"
        ) from None
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (2, card.num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelCardError(
            f"{path}: the network answers {shape} for 2 images, but the labels file names "
            f"{card.num_classes} classes: expected (2, {card.num_classes})"
        )
