"""``radserve bench --system NAME``: a served system at its study input size, on this machine.

A random-init checkpoint of the system's study architecture (throughput does not depend on the
weights), exported with the system's contract into a scratch repository (embedded target, fp32,
parity gate on a few samples), and requests made by the client's own preprocessing from the
system's synthetic data: radiographs for the radiograph systems (which also get the end-to-end path
over a folder of them), ``[6, H, W]`` study tensors for ``vertebral-fracture-mri``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PARITY_SAMPLES = 8  # the gate runs the study-size network on the CPU: a few samples suffice here
_FILES = 24  # radiographs in the end-to-end folder


@dataclass(frozen=True)
class SystemModel:
    """A system exported for benchmarking: where, under which name, and its requests."""

    repository: Path
    model: str
    images: list[np.ndarray]  # uint8 [1, C, H, W] each
    dicom: Path | None  # the end-to-end folder; None for study-level systems


def system_model(system: str, work: Path, count: int = 16) -> SystemModel:
    """Export ``system``'s random-init study model into ``work/repository``; its requests."""
    from radserve.export.pipeline import ExportRequest, export_checkpoint
    from radserve.export.system_data import system_wire_images
    from radserve.loadtests.random_checkpoint import write_system_checkpoint
    from radserve.synthetic.system_images import write_system_set

    checkpoint = write_system_checkpoint(system, work / f"{system}.pt")
    repository = work / "repository"
    request = ExportRequest(checkpoint, system, repository, samples=_PARITY_SAMPLES, system=system)
    card = export_checkpoint(request).variants[0].card
    tensors, _ = system_wire_images(system, card, count, seed=11, matrix=(640, 528))
    images = [np.ascontiguousarray(tensor[np.newaxis]) for tensor in tensors]
    dicom = None
    if card.channels == 1:
        dicom = work / "dicom"
        write_system_set(system, dicom, _FILES, seed=12)
    return SystemModel(repository, system, images, dicom)
