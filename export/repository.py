"""Writing model versions into a Triton model repository, atomically.

A version is assembled in a staging folder inside the model folder (Triton ignores non-numeric
subfolders) and renamed into place, so a half-written export never appears in the repository.
Each export adds the next numbered version; with ``keep_versions`` the older ones beyond the newest
N are removed afterwards (and the config's ``version_policy`` serves at most N).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.errors import ExportError
from radserve.export.model_config import (
    LABELS_FILE,
    MODEL_FILES,
    ServingOptions,
    Target,
    build_config,
    render_config,
)
from radserve.model_card import ModelCard, model_versions

if TYPE_CHECKING:
    from radserve.export.tensorrt import EngineMetadata

LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"
# The Python-backend model of the embedded target; it imports Triton's stub utilities, so it is
# copied as a file, never imported here.
EMBEDDED_MODEL_SOURCE = Path(__file__).with_name("embedded_model.py")


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
    *,
    keep_versions: int | None = None,
    extra_files: dict[str, Path] | None = None,
    engine: EngineMetadata | None = None,
    extra_outputs: Sequence[tuple[str, Sequence[int]]] = (),
) -> Path:
    """Add ``model_file`` as the next version of ``card.name``; returns the version folder.

    ``extra_files`` (name → source) are copied into the version folder beside the model (e.g. the
    TensorRT plan's metadata); ``engine`` is that metadata, checked against the config's batching;
    ``extra_outputs`` are the further outputs of a companion model (see :func:`build_config`).
    """
    options = options or ServingOptions()
    if keep_versions is not None:
        if keep_versions < 1:
            raise ExportError(f"keep_versions must be at least 1, got {keep_versions}")
        # the version policy never names more versions than are kept on disk
        options = replace(options, versions_kept=min(options.versions_kept, keep_versions))
    # the config is built first: a configuration Triton would reject stops the export here
    config_text = render_config(build_config(card, target, options, engine, extra_outputs))
    model_dir = repository / card.name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = (model_versions(model_dir) or [0])[-1] + 1
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        shutil.copyfile(model_file, staging / MODEL_FILES[target])
        if target == "embedded":
            shutil.copyfile(EMBEDDED_MODEL_SOURCE, staging / "model.py")
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, staging / name)
        card.write(staging)
        staging.chmod(0o755)
        staging.rename(model_dir / str(version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_atomically(model_dir / LABELS_FILE, "".join(f"{label}\n" for label in card.labels))
    _write_atomically(model_dir / CONFIG_FILE, config_text)
    LOGGER.info("published %s version %d (%s) in %s", card.name, version, target, repository)
    if keep_versions is not None:
        prune(model_dir, keep_versions)
    return model_dir / str(version)


def prune(model_dir: Path, keep: int) -> list[int]:
    """Remove all but the newest ``keep`` versions; returns the removed version numbers.

    A version folder is first renamed to a hidden name (Triton ignores it from then on), then deleted.
    """
    removed = model_versions(model_dir)[:-keep] if keep > 0 else []
    for number in removed:
        doomed = model_dir / f".removed-{number}"
        (model_dir / str(number)).rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        LOGGER.info("pruned %s version %d", model_dir.name, number)
    return removed
