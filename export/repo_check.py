"""``radserve repo check DIR``: is a model repository what Triton and the client will expect?

Per model folder: the config parses with Triton's schema and names the folder; numbered version
folders exist and hold the target's model files; ``labels.txt`` has one label per output; every
version's ``model_card.json`` agrees with the config (name, input size, labels) and the newest one is
the card in the config; the ONNX graph's input/output names, types and shapes match the config; a
TensorRT plan has metadata whose profile covers ``max_batch_size`` and the input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ModelCardError, RadserveError
from radserve.export.model_config import LABELS_FILE, parse_config
from radserve.export.repository import CONFIG_FILE
from radserve.export.router import router_problems
from radserve.export.targets import ServingTarget, target_of
from radserve.model_card import (
    GRADCAM_OUTPUT,
    INPUT_NAME,
    MODEL_CARD_FILE,
    MODEL_CARD_PARAMETER,
    OUTPUT_NAME,
    ModelCard,
    model_versions,
)
from radserve.routing import ROUTER_PARAMETER
from radserve.server_config.serving_view import serving_device


@dataclass
class ModelReport:
    name: str
    target: str = "?"
    versions: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RepositoryReport:
    path: Path
    models: list[ModelReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(model.ok for model in self.models)

    def render(self) -> str:
        lines = [f"repository {self.path}: {len(self.models)} model(s)"]
        lines.extend(f"  ERROR {problem}" for problem in self.problems)
        for model in self.models:
            status = "ok" if model.ok else "FAILED"
            shown = ",".join(str(v) for v in model.versions) or "none"
            lines.append(f"  {model.name} [{model.target}] versions {shown}: {status}")
            lines.extend(f"    ERROR {problem}" for problem in model.problems)
            lines.extend(f"    note  {note}" for note in model.notes)
        failed = sum(not model.ok for model in self.models)
        lines.append("repository ok" if self.ok else f"{failed} model(s) failed the check")
        return "\n".join(lines)


def check_repository(path: Path, image: str | None = None) -> RepositoryReport:
    """Check every model folder of ``path``; with ``image`` (``nvcr.io/nvidia/tritonserver:YY.MM-py3``)
    also whether that image loads each TensorRT plan (export/ngc_images.py)."""
    report = RepositoryReport(path)
    if not path.is_dir():
        report.problems.append(f"{path} is not a folder")
        return report
    folders = sorted(entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        report.problems.append("no model folder")
    report.models = [check_model(folder, image) for folder in folders]
    return report


def check_model(model_dir: Path, image: str | None = None) -> ModelReport:
    report = ModelReport(model_dir.name)
    try:
        _check_model(model_dir, report, image)
    except RadserveError as error:  # anything unreadable ends this model's check with a reason
        report.problems.append(str(error))
    return report


def _check_model(model_dir: Path, report: ModelReport, image: str | None) -> None:
    problems = report.problems
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        problems.append(f"no {CONFIG_FILE}")
        return
    try:
        config = parse_config(config_path.read_text())
    except text_format.ParseError as error:
        problems.append(f"{CONFIG_FILE} does not parse with Triton's schema: {error}")
        return
    target = _identify(config, report)
    if config.name and config.name != model_dir.name:
        problems.append(f"config name {config.name!r} differs from the folder name {model_dir.name!r}")
    if ROUTER_PARAMETER in config.parameters:  # a router (radserve export-router): no model file of its own
        return _check_router(model_dir, config, report)
    extra_outputs = [output.name for output in config.output[1:]]
    if len(config.input) != 1 or not config.output or extra_outputs not in ([], [GRADCAM_OUTPUT]):
        problems.append(
            f"expected one input and one output (a Grad-CAM companion: + {GRADCAM_OUTPUT}), "
            f"config has {len(config.input)}/{len(config.output)}"
        )
        return
    wire, out = config.input[0], config.output[0]
    if (wire.name, wire.data_type) != (INPUT_NAME, pb.TYPE_UINT8) or len(wire.dims) != 3 or wire.dims[0] < 1:
        problems.append(
            f"input must be {INPUT_NAME} UINT8 [C, H, W]; config has {wire.name} dims {list(wire.dims)}"
        )
        return
    if (out.name, out.data_type) != (OUTPUT_NAME, pb.TYPE_FP32) or len(out.dims) != 1:
        problems.append(f"output must be {OUTPUT_NAME} FP32 [C]; config has {out.name} dims {list(out.dims)}")
        return
    input_size = (int(wire.dims[1]), int(wire.dims[2]))
    classes = int(out.dims[0])

    labels = _read_labels(model_dir / (out.label_filename or LABELS_FILE), classes, problems)

    config_card = None
    parameter = config.parameters.get(MODEL_CARD_PARAMETER)
    if parameter is None:
        problems.append(f"config lacks the {MODEL_CARD_PARAMETER} parameter the client reads")
    else:
        try:
            config_card = ModelCard.from_json(parameter.string_value)
        except (ModelCardError, TypeError) as error:
            problems.append(f"config parameter {MODEL_CARD_PARAMETER}: {error}")

    report.versions = model_versions(model_dir)
    if not report.versions:
        problems.append("no numbered version folder")
    staging = [
        entry.name for entry in model_dir.iterdir() if entry.name.startswith((".staging-", ".removed-"))
    ]
    if staging:
        report.notes.append(f"leftover folders of an interrupted export: {', '.join(sorted(staging))}")
    if config.HasField("version_policy") and config.version_policy.HasField("latest"):
        served = config.version_policy.latest.num_versions
        if len(report.versions) > served:
            report.notes.append(
                f"{len(report.versions)} versions on disk, the policy serves the latest {served}"
            )

    newest_card = _check_versions(model_dir, config, target, report, (input_size, classes, labels), image)
    if config_card is not None and newest_card is not None and config_card != newest_card:
        problems.append(
            f"the config's model card differs from version {report.versions[-1]}'s {MODEL_CARD_FILE}"
        )
    if config_card is not None:
        _check_card(config_card, "config", model_dir.name, input_size, classes, labels, problems)


def _identify(config: pb.ModelConfig, report: ModelReport) -> ServingTarget | None:
    """The target that wrote ``config`` (None: not radserve's); a problem where its instances run
    on a device the target does not serve on."""
    target = target_of(config)
    report.target = target.label if target else (config.platform or config.backend or "?")
    if target is not None and serving_device(config) != target.device:
        report.problems.append(
            f"instance groups run on the {serving_device(config)}, target {target.name!r} serves on "
            f"{' or '.join(target.devices)}"
        )
    return target


def _read_labels(path: Path, classes: int, problems: list[str]) -> tuple[str, ...]:
    if not path.is_file():
        problems.append(f"no {path.name}")
        return ()
    labels = tuple(line for line in path.read_text().splitlines() if line.strip())
    if len(labels) != classes:
        problems.append(f"{path.name} has {len(labels)} labels, the output has {classes}")
    return labels


def _check_versions(
    model_dir: Path,
    config: pb.ModelConfig,
    target: ServingTarget | None,
    report: ModelReport,
    shape: tuple[tuple[int, int], int, tuple[str, ...]],
    image: str | None,
) -> ModelCard | None:
    """Check each version folder (and, with ``image``, whether it loads there); the newest card."""
    newest_card = None
    for number in report.versions:
        folder = model_dir / str(number)
        card = _check_version(folder, config, target, report, shape)
        newest_card = card or newest_card
        if image is not None and target is not None:
            problems, notes = target.check_image(folder, card, image)
            report.problems.extend(f"version {number}: {problem}" for problem in problems)
            report.notes.extend(f"version {number}: {note}" for note in notes)
    return newest_card


def _check_router(model_dir: Path, config: pb.ModelConfig, report: ModelReport) -> None:
    report.target, report.versions = "router", model_versions(model_dir)
    report.problems.extend(router_problems(model_dir, config))


def _check_card(
    card: ModelCard,
    where: str,
    name: str,
    input_size: tuple[int, int],
    classes: int,
    labels: tuple[str, ...],
    problems: list[str],
) -> None:
    if card.name != name:
        problems.append(f"{where}: model card name {card.name!r}, model folder {name!r}")
    if tuple(card.input_size) != input_size:
        problems.append(f"{where}: model card input size {list(card.input_size)}, config {list(input_size)}")
    if card.num_classes != classes:
        problems.append(f"{where}: model card has {card.num_classes} labels, the output has {classes}")
    elif labels and tuple(card.labels) != labels:
        problems.append(f"{where}: model card labels differ from {LABELS_FILE}")


def _check_version(
    folder: Path,
    config: pb.ModelConfig,
    target: ServingTarget | None,
    report: ModelReport,
    shape: tuple[tuple[int, int], int, tuple[str, ...]],
) -> ModelCard | None:
    problems = report.problems
    where = f"version {folder.name}"
    card = None
    try:
        card = ModelCard.read(folder)
    except ModelCardError as error:
        problems.append(f"{where}: {error}")
    else:
        _check_card(card, where, config.name or folder.parent.name, *shape, problems)
    channels = int(config.input[0].dims[0])
    if card is not None and card.channels != channels:
        problems.append(f"{where}: model card has {card.channels} input channel(s), config {channels}")
    if target is None:
        report.notes.append(f"{where}: platform {report.target!r} is not checked")
    else:
        target.check_version(folder, config, card, where, problems)
    return card
