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

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ModelCardError, RadserveError
from radserve.export.hashing import file_sha256
from radserve.export.model_config import LABELS_FILE, WEIGHTS_FILE_PARAMETER, parse_config
from radserve.export.repository import CONFIG_FILE
from radserve.export.router import router_problems
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

_ONNX_TYPES = {pb.TYPE_UINT8: onnx.TensorProto.UINT8, pb.TYPE_FP32: onnx.TensorProto.FLOAT}


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


def check_repository(path: Path) -> RepositoryReport:
    report = RepositoryReport(path)
    if not path.is_dir():
        report.problems.append(f"{path} is not a folder")
        return report
    folders = sorted(entry for entry in path.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        report.problems.append("no model folder")
    report.models = [check_model(folder) for folder in folders]
    return report


def check_model(model_dir: Path) -> ModelReport:
    report = ModelReport(model_dir.name)
    try:
        _check_model(model_dir, report)
    except RadserveError as error:  # anything unreadable ends this model's check with a reason
        report.problems.append(str(error))
    return report


def _target(config: pb.ModelConfig) -> str:
    if config.backend == "python":
        return "embedded-gpu" if WEIGHTS_FILE_PARAMETER in config.parameters else "embedded"
    return {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(
        config.platform, config.platform or config.backend or "?"
    )


def _check_model(model_dir: Path, report: ModelReport) -> None:
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
    report.target = _target(config)
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

    labels_path = model_dir / (out.label_filename or LABELS_FILE)
    labels: tuple[str, ...] = ()
    if not labels_path.is_file():
        problems.append(f"no {labels_path.name}")
    else:
        labels = tuple(line for line in labels_path.read_text().splitlines() if line.strip())
        if len(labels) != classes:
            problems.append(f"{labels_path.name} has {len(labels)} labels, the output has {classes}")

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

    newest_card = None
    for number in report.versions:
        card = _check_version(model_dir / str(number), config, report, input_size, classes, labels)
        newest_card = card or newest_card
    if config_card is not None and newest_card is not None and config_card != newest_card:
        problems.append(
            f"the config's model card differs from version {report.versions[-1]}'s {MODEL_CARD_FILE}"
        )
    if config_card is not None:
        _check_card(config_card, "config", model_dir.name, input_size, classes, labels, problems)


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
    report: ModelReport,
    input_size: tuple[int, int],
    classes: int,
    labels: tuple[str, ...],
) -> ModelCard | None:
    problems = report.problems
    where = f"version {folder.name}"
    card = None
    try:
        card = ModelCard.read(folder)
    except ModelCardError as error:
        problems.append(f"{where}: {error}")
    else:
        _check_card(card, where, config.name or folder.parent.name, input_size, classes, labels, problems)

    target = report.target
    channels = int(config.input[0].dims[0])
    if card is not None and card.channels != channels:
        problems.append(f"{where}: model card has {card.channels} input channel(s), config {channels}")
    if target == "embedded":
        if not (folder / "model.py").is_file():
            problems.append(f"{where}: no model.py (the Python backend's model)")
        onnx_name = config.parameters["onnx_model_filename"].string_value or "model.onnx"
        _check_onnx(
            folder / onnx_name, where, (channels, *input_size), classes, problems, _output_names(config)
        )
    elif target == "embedded-gpu":
        if not (folder / "model.py").is_file():
            problems.append(f"{where}: no model.py (the Python backend's model)")
        weights = folder / config.parameters[WEIGHTS_FILE_PARAMETER].string_value
        _check_weights(weights, where, card, problems)
    elif target == "onnxruntime":
        _check_onnx(
            folder / (config.default_model_filename or "model.onnx"),
            where,
            (channels, *input_size),
            classes,
            problems,
            _output_names(config),
        )
    elif target == "tensorrt":
        _check_plan(
            folder / (config.default_model_filename or "model.plan"),
            where,
            config,
            input_size,
            card,
            problems,
        )
    else:
        report.notes.append(f"{where}: platform {target!r} is not checked")
    return card


def _output_names(config: pb.ModelConfig) -> tuple[str, ...]:
    return tuple(output.name for output in config.output)


def _check_onnx(
    path: Path,
    where: str,
    wire_shape: tuple[int, int, int],
    classes: int,
    problems: list[str],
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
) -> None:
    if not path.is_file():
        problems.append(f"{where}: no {path.name}")
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and others for a damaged file
        problems.append(f"{where}: {path.name} is not a readable ONNX model: {error}")
        return
    expected = [(model.graph.input, INPUT_NAME, onnx.TensorProto.UINT8, [None, *wire_shape])]
    expected.append((model.graph.output[:1], OUTPUT_NAME, onnx.TensorProto.FLOAT, [None, classes]))
    names = [tensor.name for tensor in model.graph.output]
    if names != list(output_names):
        problems.append(f"{where}: {path.name} outputs {names}, the config expects {list(output_names)}")
        return
    for tensors, name, elem_type, shape in expected:
        names = [tensor.name for tensor in tensors]
        if names != [name]:
            problems.append(f"{where}: {path.name} has {names}, the config expects [{name!r}]")
            continue
        tensor_type = tensors[0].type.tensor_type
        dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
        if tensor_type.elem_type != elem_type:
            actual = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            wanted = onnx.TensorProto.DataType.Name(elem_type)
            problems.append(f"{where}: {path.name} {name} is {actual}, the config expects {wanted}")
        if dims != shape:
            shown = ["batch" if d is None else d for d in shape]
            problems.append(
                f"{where}: {path.name} {name} has shape {dims}, the config expects {shown} (dynamic batch)"
            )


def _check_plan(
    path: Path,
    where: str,
    config: pb.ModelConfig,
    input_size: tuple[int, int],
    card: ModelCard | None,
    problems: list[str],
) -> None:
    from radserve.export.tensorrt import EngineMetadata, metadata_path

    if not path.is_file():
        problems.append(f"{where}: no {path.name}")
        return
    try:
        metadata = EngineMetadata.read(path)
    except RadserveError as error:
        problems.append(f"{where}: {error}")
        return
    profile = metadata.profile
    if config.max_batch_size > profile["max_batch"]:
        problems.append(
            f"{where}: max_batch_size {config.max_batch_size} exceeds the plan's profile max "
            f"{profile['max_batch']} (Triton rejects it)"
        )
    if (profile["height"], profile["width"]) != input_size:
        problems.append(
            f"{where}: plan built for {profile['height']}x{profile['width']}, config {input_size}"
        )
    if card is not None and metadata.precision != card.precision:
        problems.append(f"{where}: plan precision {metadata.precision}, model card {card.precision}")
    if metadata.plan_sha256 and file_sha256(path) != metadata.plan_sha256:
        problems.append(f"{where}: {path.name} does not match the sha256 in {metadata_path(path).name}")


def _check_weights(path: Path, where: str, card: ModelCard | None, problems: list[str]) -> None:
    """embedded-gpu: the weights load as plain tensors and fit the card's architecture and labels."""
    if not path.is_file():
        problems.append(f"{where}: no {path.name}")
        return
    if card is None:
        return
    import torch

    from radserve.export.architectures import build_model

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        build_model(card.architecture, card.num_classes).load_state_dict(state_dict)
    except Exception as error:  # unpickling, unknown architecture, shapes: all end in one line
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        problems.append(f"{where}: {path.name} does not load into {card.architecture}: {first}")
