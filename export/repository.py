"""Writing model versions into a Triton model repository, atomically.

Each export adds the next numbered version. The whole model folder is staged beside it (a hidden
``.staging-*`` folder of the repository: the kept versions hard-linked, the new version, the config
naming that version, the labels) and then exchanged with the live folder in one ``renameat2``
(RENAME_EXCHANGE), so whoever reads the repository (a reload, a poll) sees the old folder or the new
one, never a version without its config and labels. With ``keep_versions`` the older versions beyond
the newest N are left out of the new folder (and the config's ``version_policy`` serves at most N).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from radserve.errors import ExportError
from radserve.export.model_config import (
    LABELS_FILE,
    ServingOptions,
    build_config,
    parse_config,
    render_config,
)
from radserve.export.targets import ServingTarget, as_target
from radserve.files import swap_folder
from radserve.model_card import MODEL_CARD_PARAMETER, MODEL_VERSION_PARAMETER, ModelCard, model_versions

if TYPE_CHECKING:
    from radserve.export.tensorrt_plan import EngineMetadata

LOGGER = logging.getLogger(__name__)

CONFIG_FILE = "config.pbtxt"


def publish(
    repository: Path,
    card: ModelCard,
    model_file: Path,
    target: ServingTarget | str = "embedded",
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
    target = as_target(target)
    if keep_versions is not None:
        if keep_versions < 1:
            raise ExportError(f"keep_versions must be at least 1, got {keep_versions}")
        # the version policy never names more versions than are kept on disk
        options = replace(options, versions_kept=min(options.versions_kept, keep_versions))
    model_dir = repository / card.name
    version = next_version(model_dir)
    # the config is built first: a configuration Triton would reject stops the export here
    config = build_config(card, target, options, engine, extra_outputs)
    config.parameters[MODEL_VERSION_PARAMETER].string_value = str(version)

    def fill(staging: Path) -> None:
        for number in model_versions(model_dir):
            shutil.copytree(model_dir / str(number), staging / str(number), copy_function=os.link)
        version_dir = staging / str(version)
        version_dir.mkdir()
        shutil.copyfile(model_file, version_dir / target.model_file)
        if target.model_source is not None:  # a Python-backend model: its model.py, self-contained
            shutil.copyfile(target.model_source, version_dir / "model.py")
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, version_dir / name)
        card.write(version_dir)
        (staging / LABELS_FILE).write_text("".join(f"{label}\n" for label in card.labels))
        (staging / CONFIG_FILE).write_text(render_config(config))
        if keep_versions is not None:
            prune(staging, keep_versions)

    replace_model_folder(repository, card.name, fill)
    LOGGER.info("published %s version %d (%s) in %s", card.name, version, target.label, repository)
    return model_dir / str(version)


def republish(repository: Path, card: ModelCard) -> Path:
    """The newest version of embedded model ``card.name`` again as its next version, under ``card``.

    The model file is hard-linked, ``model.py`` is the current one; the config keeps everything but
    the card, the version and the CPU engine, which follow ``card`` (``radserve tune --apply``).

    Args:
        repository: The model repository.
        card: The new version's card (its ``cpu_engine`` and ``precision`` set the engine).

    Returns:
        The new version folder.

    Raises:
        ExportError: The model has no version, or is not served by the embedded target.
    """
    from radserve.export.targets.embedded import EmbeddedTarget, set_cpu_engine

    model_dir = repository / card.name
    config = (
        parse_config((model_dir / CONFIG_FILE).read_text()) if (model_dir / CONFIG_FILE).is_file() else None
    )
    if config is None or not model_versions(model_dir) or not EmbeddedTarget.serves(config):
        raise ExportError(f"{card.name} in {repository} is not an embedded model with a version")
    newest, version = model_dir / str(model_versions(model_dir)[-1]), next_version(model_dir)
    set_cpu_engine(config, card)
    config.parameters[MODEL_CARD_PARAMETER].string_value = card.to_json()
    config.parameters[MODEL_VERSION_PARAMETER].string_value = str(version)

    def fill(staging: Path) -> None:
        for number in model_versions(model_dir):
            shutil.copytree(model_dir / str(number), staging / str(number), copy_function=os.link)
        shutil.copytree(newest, staging / str(version), copy_function=os.link)
        (staging / str(version) / "model.py").unlink()
        shutil.copyfile(EmbeddedTarget.model_source, staging / str(version) / "model.py")  # type: ignore[arg-type]
        (staging / str(version) / "model_card.json").unlink()
        card.write(staging / str(version))
        for extra in (LABELS_FILE,):
            if (model_dir / extra).is_file():
                shutil.copyfile(model_dir / extra, staging / extra)
        (staging / CONFIG_FILE).write_text(render_config(config))

    replace_model_folder(repository, card.name, fill)
    LOGGER.info(
        "published %s version %d (cpu engine %s) in %s", card.name, version, card.cpu_engine, repository
    )
    return model_dir / str(version)


def next_version(model_dir: Path) -> int:
    """The version number a new export of the model in ``model_dir`` gets."""
    return (model_versions(model_dir) or [0])[-1] + 1


def replace_model_folder(repository: Path, name: str, fill: Callable[[Path], None]) -> None:
    """Replace model ``name``'s folder by one ``fill(staging)`` builds beside it, in one rename:
    Triton never sees a half-written model, and nothing changes when ``fill`` raises."""
    repository.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=repository))
    try:
        fill(staging)
        staging.chmod(0o755)
        swap_folder(staging, repository / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
