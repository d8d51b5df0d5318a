"""``radserve export-router``: a router model (Python-backend BLS) over models already in a repository.

The stages are read from the repository as Triton will serve them: each model's config carries its
card and the version it describes (``radserve.model_version``), and the router pins every BLS request
to that version. A route from a label the first stage does not have, a route to a model that is not
in the repository, or a stage that is itself a router is refused here with the reason. The router is
published like a model: a new numbered version (the folder exchanged atomically), one version kept.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError, ModelCardError
from radserve.export.model_config import dynamic_batching, parse_config, render_config
from radserve.export.repository import CONFIG_FILE, next_version, replace_model_folder
from radserve.model_card import (
    MODEL_CARD_PARAMETER,
    MODEL_VERSION_PARAMETER,
    OUTPUT_NAME,
    ModelCard,
)
from radserve.routing import (
    DOWNSTREAM_OUTPUT,
    FIRST_STAGE_OUTPUT,
    ROUTE_ERROR_OUTPUT,
    ROUTER_PARAMETER,
    RouterCard,
    Stage,
)
from radserve.settings import SETTINGS

LOGGER = logging.getLogger(__name__)

ROUTER_SOURCE = Path(__file__).with_name("router_model.py")
ROUTER_FILE = "router.json"


def served_stage(repository: Path, model: str, role: str) -> Stage:
    """``model`` as the repository serves it (card and version from its config), or the reason not."""
    config_file = repository / model / CONFIG_FILE
    if not config_file.is_file():
        known = sorted(p.name for p in repository.iterdir() if (p / CONFIG_FILE).is_file())
        raise ExportError(f"{role} model {model!r} is not in the repository {repository} (models: {known})")
    try:
        parameters = parse_config(config_file.read_text()).parameters
    except text_format.ParseError as error:
        raise ExportError(f"{role} model {model!r}: {config_file} does not parse: {error}") from None
    if ROUTER_PARAMETER in parameters or MODEL_CARD_PARAMETER not in parameters:
        raise ExportError(
            f"{role} model {model!r} is not a radserve model (no {MODEL_CARD_PARAMETER} in its config)"
        )
    card = ModelCard.from_json(parameters[MODEL_CARD_PARAMETER].string_value)
    version = (
        parameters[MODEL_VERSION_PARAMETER].string_value if MODEL_VERSION_PARAMETER in parameters else ""
    )
    if version and not (repository / model / version).is_dir():
        raise ExportError(f"{role} model {model!r}: version {version} named by its config is not on disk")
    return Stage(model, version, card)


def router_card(repository: Path, name: str, first: str, routes: Mapping[str, str]) -> RouterCard:
    """The router ``name``: ``first`` and the models ``routes`` (label → model) name, checked."""
    if name == first or name in routes.values():
        raise ExportError(f"router {name!r} cannot be one of its own stages")
    first_stage = served_stage(repository, first, "first-stage")
    downstream = tuple(
        served_stage(repository, model, "downstream") for model in dict.fromkeys(routes.values())
    )
    try:
        return RouterCard(name, first_stage, downstream, dict(routes))
    except ModelCardError as error:
        raise ExportError(str(error)) from None


def build_router_config(router: RouterCard, version: int) -> pb.ModelConfig:
    """The Triton configuration of ``router``: one UINT8 input per wire contract, its outputs."""
    batching = SETTINGS.batching
    config = pb.ModelConfig(name=router.name, backend="python", max_batch_size=batching.max_batch_size)
    for input_name, card in router.wires.items():
        config.input.add(name=input_name, data_type=pb.TYPE_UINT8, dims=[1, *card.input_size])
    for output_name, data_type, dims in (
        (OUTPUT_NAME, pb.TYPE_FP32, router.width),
        (FIRST_STAGE_OUTPUT, pb.TYPE_FP32, router.first.card.num_classes),
        (DOWNSTREAM_OUTPUT, pb.TYPE_INT32, 1),
        (ROUTE_ERROR_OUTPUT, pb.TYPE_STRING, 1),
    ):
        config.output.add(name=output_name, data_type=data_type, dims=[dims])
    dynamic_batching(config.dynamic_batching, batching)
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=batching.router_instances)
    config.version_policy.latest.num_versions = 1
    config.parameters[ROUTER_PARAMETER].string_value = router.to_json()
    config.parameters[MODEL_VERSION_PARAMETER].string_value = str(version)
    return config


def export_router(repository: Path, name: str, first: str, routes: Mapping[str, str]) -> Path:
    """Publish the router ``name`` as the next version in ``repository``; returns the version folder."""
    router = router_card(repository, name, first, routes)
    model_dir = repository / name
    version = next_version(model_dir)
    config = build_router_config(router, version)

    def fill(staging: Path) -> None:  # the router alone: older versions are not kept
        version_dir = staging / str(version)
        version_dir.mkdir()
        shutil.copyfile(ROUTER_SOURCE, version_dir / "model.py")
        (version_dir / ROUTER_FILE).write_text(router.to_json() + "\n")
        (staging / CONFIG_FILE).write_text(render_config(config))

    replace_model_folder(repository, name, fill)
    LOGGER.info("published router %s version %d in %s", name, version, repository)
    return model_dir / str(version)


def router_problems(model_dir: Path, config: pb.ModelConfig) -> list[str]:
    """What is wrong with a published router (``radserve repo check``): its description, the stages it
    pins (still served at that version, same card), its model.py and its inputs."""
    try:
        router = RouterCard.from_json(config.parameters[ROUTER_PARAMETER].string_value)
    except ModelCardError as error:
        return [str(error)]
    version = (
        config.parameters[MODEL_VERSION_PARAMETER].string_value
        if MODEL_VERSION_PARAMETER in config.parameters
        else ""
    )
    problems = (
        [] if (model_dir / version / "model.py").is_file() else [f"version {version!r} has no model.py"]
    )
    for stage in (router.first, *router.downstream):
        try:
            served = served_stage(model_dir.parent, stage.model, "stage")
        except ExportError as error:
            problems.append(str(error))
            continue
        if served.version != stage.version:
            problems.append(
                f"stage {stage.model!r} is pinned to version {stage.version}; the repository serves version "
                f"{served.version} now: run export-router again"
            )
        elif served.card != stage.card:
            problems.append(
                f"stage {stage.model!r}: its card differs from the one the router was exported with"
            )
    wires = [(name, [1, *card.input_size]) for name, card in router.wires.items()]
    if sorted(wires) != sorted((i.name, list(i.dims)) for i in config.input):
        problems.append(f"inputs {[i.name for i in config.input]} are not the stages' wire contracts {wires}")
    return problems
