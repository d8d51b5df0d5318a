"""Writing model versions into a Triton model repository, atomically.

A version is assembled in a staging folder inside the model folder (Triton ignores non-numeric
subfolders) and renamed into place, so a half-written export never appears in the repository.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from client.model_card import ModelCard
from export.model_config import (
    LABELS_FILE,
    MODEL_FILES,
    ServingOptions,
    Target,
    build_config,
    render_config,
)

LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
# The Python-backend model of the embedded target; it imports Triton's stub utilities, so it is
# copied as a file, never imported here.
EMBEDDED_MODEL_SOURCE = Path(__file__).with_name("embedded_model.py")


def versions(model_dir: Path) -> list[int]:
    """The numbered versions present in a model folder, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir() if entry.is_dir() and entry.name.isdigit())


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def publish(
    repository: Path,
    card: ModelCard,
    model_file: Path,
    target: Target = "embedded",
    options: ServingOptions | None = None,
) -> Path:
    """Add ``model_file`` as the next version of ``card.name``; returns the version folder."""
    model_dir = repository / card.name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (versions(model_dir) or [0])[-1] + 1
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        shutil.copyfile(model_file, staging / MODEL_FILES[target])
        if target == "embedded":
            shutil.copyfile(EMBEDDED_MODEL_SOURCE, staging / "model.py")
        card.write(staging)
        staging.chmod(0o755)
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_atomically(model_dir / LABELS_FILE, "".join(f"{label}\n" for label in card.labels))
    _write_atomically(model_dir / CONFIG_FILE, render_config(build_config(card, target, options)))
    LOGGER.info("published %s version %d (%s) in %s", card.name, version, target, repository)
    return model_dir / str(version)
