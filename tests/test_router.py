"""The router: a first-stage classifier's label picks the downstream model, in one served BLS model.

Real tritonserver, real gRPC, real DICOM: a mixed folder of 20 synthetic radiographs (body regions
and extremity radiographs) goes through the router; each row must come from the downstream model the
routing table names for the row's first-stage label, answered in its own wire contract, with both
stages' names and versions. The first stage is the session's tiny body-region model; the downstream
models are randomly initialised (routing correctness does not need trained ones).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import onnxruntime
import pydicom
import pytest
import torch
from highdicom.sr import ComprehensiveSR, MeasurementsAndQualitativeEvaluations

from radserve.cli import EXIT_FAILURE, main
from radserve.client._sr_content import label_concept
from radserve.client.classify import ClassifyOptions, classify
from radserve.client.flow import prepare_file
from radserve.client.inputs import discover
from radserve.client.results import ResultRow, ResultWriter
from radserve.errors import ExportError
from radserve.export.architectures import build_model
from radserve.export.checkpoint import save_checkpoint
from radserve.export.model_config import ServingOptions, build_config, parse_config, render_config
from radserve.export.pipeline import ExportRequest, ExportResult, export_checkpoint
from radserve.export.repo_check import check_repository
from radserve.export.router import export_router
from radserve.model_card import MODEL_VERSION_PARAMETER, ModelCard
from radserve.routing import ROUTER_PARAMETER, RouterCard
from radserve.server_config.triton import TritonServer, free_ports
from radserve.synthetic.dataset import write_synthetic_set
from radserve.synthetic.system_images import write_system_set

FIRST = "tiny"  # the session's tiny body-region model (conftest)
FRACTURE, OTHER, FAULTY = "fracture", "other", "faulty"
Local = dict[str, dict[str, dict[str, float]]]  # model -> file -> label -> probability (ONNX Runtime here)

# A downstream model whose every answer lacks its probabilities. (Answers carrying a TritonError made
# tritonserver 2.51's Python backend crash now and then (SIGSEGV in libtriton_python.so) or garble the
# message when a BLS caller read it: docs/how-to/systems.md, "The router".)
_FAULTY_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(output_tensors=[]) for _ in requests]
"""


def _random_model(folder: Path, name: str, architecture: str, labels: tuple[str, ...], size: int) -> Path:
    torch.manual_seed(0)
    card = ModelCard(name=name, architecture=architecture, labels=labels, input_size=(size, size))
    path = folder / f"{name}.pt"
    save_checkpoint(path, build_model(architecture, len(labels), 3), card)
    return path


def _faulty(repository: Path) -> None:
    """A served radserve model whose every answer is an error (a Python model with a card)."""
    card = ModelCard(name=FAULTY, architecture="resnet18", labels=("a", "b"), input_size=(64, 64))
    config = build_config(card, "embedded", ServingOptions(warmup=False))
    config.parameters[MODEL_VERSION_PARAMETER].string_value = "1"
    (repository / FAULTY / "1").mkdir(parents=True)
    (repository / FAULTY / "1" / "model.py").write_text(_FAULTY_MODEL)
    (repository / FAULTY / "labels.txt").write_text("a\nb\n")
    (repository / FAULTY / "config.pbtxt").write_text(render_config(config))


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 radiographs: 14 body regions and 6 extremity (fracture system) radiographs, one folder."""
    folder = tmp_path_factory.mktemp("mixed")
    write_synthetic_set(folder / "regions", 14, seed=11, matrix=(320, 256), compressed_share=0.2)
    write_system_set("fracture", folder / "extremities", 6, seed=5, matrix=(300, 260))
    return folder


def _local(repository: Path, model: str, files: list[Path]) -> dict[str, dict[str, float]]:
    """``model``'s probabilities per file, computed here with ONNX Runtime on the wire image the
    client prepares for that model's own contract."""
    card = ModelCard.from_repository(repository, model)
    (version,) = (p for p in (repository / model).iterdir() if p.name.isdigit())
    session = onnxruntime.InferenceSession(str(version / "model.onnx"))
    answers = {}
    for path in files:
        (radiograph,) = prepare_file(str(path), card).radiographs
        (probabilities,) = session.run(None, {session.get_inputs()[0].name: radiograph.image[None]})
        answers[str(path)] = dict(zip(card.labels, map(float, probabilities[0]), strict=True))
    return answers


@pytest.fixture(scope="module")
def routed(
    tmp_path_factory: pytest.TempPathFactory, tiny_export: ExportResult, mixed_folder: Path
) -> Iterator[tuple[TritonServer, dict[str, str], Local]]:
    """A repository with the first stage, two downstream models, a faulty one and two routers."""
    repository = tmp_path_factory.mktemp("router-repository")
    shutil.copytree(tiny_export.version_dir.parent, repository / FIRST)
    work = tmp_path_factory.mktemp("router-checkpoints")
    fracture = _random_model(work, FRACTURE, "mobilenet_v3_small", ("fracture", "no_fracture"), 128)
    export_checkpoint(ExportRequest(fracture, FRACTURE, repository, samples=2, system="fracture"))
    other = _random_model(work, OTHER, "mobilenet_v3_small", ("x", "y", "z"), 96)
    export_checkpoint(ExportRequest(other, OTHER, repository, samples=2))
    _faulty(repository)
    files = list(discover([mixed_folder]).files)
    local = {model: _local(repository, model, files) for model in (FIRST, FRACTURE, OTHER)}
    expected = _first_labels(local)
    seen = [label for label, _ in Counter(expected.values()).most_common()]
    assert len(seen) >= 2, f"the first stage must give at least two labels on the folder: {seen}"
    # the most frequent label to one model, the next to the other, a third (if any) left unrouted
    routes = {seen[0]: FRACTURE, seen[1]: OTHER}
    routes |= {label: (FRACTURE, OTHER)[i % 2] for i, label in enumerate(seen[3:])}
    export_router(repository, "router", FIRST, routes)
    export_router(repository, "router_faulty", FIRST, {seen[0]: FAULTY, **{x: FRACTURE for x in seen[1:]}})
    log = tmp_path_factory.mktemp("router-triton") / "tritonserver.log"
    with TritonServer(repository, ports=free_ports(), log_file=log) as server:
        yield server, routes, local


def _first_labels(local: Local) -> dict[str, str]:
    return {path: max(answer, key=answer.__getitem__) for path, answer in local[FIRST].items()}


def _rows(server: TritonServer, model: str, folder: Path, output: Path) -> list[ResultRow]:
    """``classify`` through ``model`` over ``folder``, rows also written to ``output``."""
    rows: list[ResultRow] = []
    with ResultWriter(output) as writer:

        def keep(batch: list[ResultRow]) -> None:
            rows.extend(batch)
            writer.write(batch)

        options = ClassifyOptions(url=server.grpc_url, max_in_flight=8, images_per_request=8, workers=1)
        asyncio.run(classify(discover([folder]).files, model, keep, options))
    return rows


def test_router_config_parses_and_names_each_wire_contract(
    routed: tuple[TritonServer, dict[str, str], Local],
) -> None:
    server, routes, _ = routed
    config = parse_config((server.repository / "router" / "config.pbtxt").read_text())
    router = RouterCard.from_json(config.parameters[ROUTER_PARAMETER].string_value)
    assert router.routes == routes
    assert {stage.model: stage.version for stage in router.downstream} == {FRACTURE: "1", OTHER: "1"}
    # one input per distinct contract: the first stage's 64 px stretch, fracture's 384 px letterbox,
    # the other model's 96 px stretch
    assert sorted(i.name for i in config.input) == sorted(router.wires)
    assert len(router.wires) == 3 and "image_384x384_letterbox" in router.wires


def test_a_mixed_folder_gets_one_row_per_file_from_the_routed_model(
    routed: tuple[TritonServer, dict[str, str], Local], mixed_folder: Path, tmp_path: Path
) -> None:
    server, routes, local = routed
    first_version = parse_config((server.repository / FIRST / "config.pbtxt").read_text()).parameters[
        MODEL_VERSION_PARAMETER
    ]
    expected = _first_labels(local)
    rows = _rows(server, "router", mixed_folder, tmp_path / "rows.csv")
    assert sorted(row.path for row in rows) == sorted(expected) and len(rows) == 20
    answered: Counter[str] = Counter()
    for row in rows:
        assert row.status == "ok", row.error
        assert (row.router, row.router_version) == ("router", "1")
        assert (row.first_stage_model, row.first_stage_version) == (FIRST, first_version.string_value)
        # the router's first stage saw what the client's own wire image gives the same model
        assert row.first_stage_label == expected[row.path]
        route = routes.get(row.first_stage_label)
        assert row.routed is (route is not None)
        assert (row.model, row.model_version) == ((route, "1") if route else (FIRST, row.first_stage_version))
        # each stage got exactly its own contract's wire image: its answer is the one computed here
        assert row.probabilities == pytest.approx(local[row.model][row.path], abs=1e-5)
        assert row.first_stage_probabilities == pytest.approx(local[FIRST][row.path], abs=1e-5)
        answered[row.model] += 1
    assert answered[FRACTURE] > 0 and answered[OTHER] > 0
    assert answered[FIRST] == sum(label not in routes for label in expected.values())
    assert answered[FIRST] > 0 or len(set(expected.values())) < 3  # a third label is left unrouted
    header = (tmp_path / "rows.csv").read_text().splitlines()[0].split(",")
    assert {"router", "router_version", "first_stage_model", "first_stage_version", "routed"} <= set(header)


def _algorithm_and_finding(group: MeasurementsAndQualitativeEvaluations) -> tuple[str, str]:
    """(Algorithm Name, finding type's meaning) of one TID 1501 measurement group."""
    (name,) = [item.TextValue for item in group[0].ContentSequence if item.name.value == "111001"]
    return name, group.finding_type.meaning


def test_a_routed_row_is_reported_with_both_stages_findings(
    routed: tuple[TritonServer, dict[str, str], Local], mixed_folder: Path, tmp_path: Path
) -> None:
    server, _, _ = routed
    rows: list[ResultRow] = []
    options = ClassifyOptions(url=server.grpc_url, max_in_flight=8, workers=1, sr_dir=tmp_path / "sr")
    asyncio.run(classify(discover([mixed_folder]).files, "router", rows.extend, options))
    reports = {}
    for path in (tmp_path / "sr").glob("*.dcm"):
        report = pydicom.dcmread(path)
        (evidence,) = report.CurrentRequestedProcedureEvidenceSequence
        reports[evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID] = (
            report
        )
    assert len(rows) == len(reports) == 20 and all(row.status == "ok" for row in rows)
    assert {row.routed for row in rows} == {True, False}
    for row in rows:
        report = ComprehensiveSR.from_dataset(reports[row.sop_instance_uid]).content
        groups = [_algorithm_and_finding(group) for group in report.get_image_measurement_groups()]
        if row.routed:
            stages = [(FIRST, row.first_stage_label), (row.model, row.label)]
        else:
            stages = [(FIRST, row.label)]
        assert groups == [(model, label_concept(label).meaning) for model, label in stages]


def test_a_failing_downstream_gives_error_rows_for_its_files_only(
    routed: tuple[TritonServer, dict[str, str], Local], mixed_folder: Path, tmp_path: Path
) -> None:
    expected = _first_labels(routed[2])
    failing = Counter(expected.values()).most_common(1)[0][0]  # routed to the faulty model
    rows = _rows(routed[0], "router_faulty", mixed_folder, tmp_path / "rows.jsonl")
    assert len(rows) == 20
    for row in rows:
        if expected[row.path] == failing:
            assert (row.status, row.error_reason, row.model) == ("error", "downstream_failed", FAULTY), (
                row.error
            )
            assert f"downstream {FAULTY!r} version 1 failed: answered without probabilities" in row.error
            assert row.path in row.error
            assert row.first_stage_label == failing
        else:
            assert (row.status, row.model) == ("ok", FRACTURE)
    written = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert sum(row["error_reason"] == "downstream_failed" for row in written) == sum(
        label == failing for label in expected.values()
    )


def test_export_refuses_a_missing_model_and_an_unknown_label(
    routed: tuple[TritonServer, dict[str, str], Local], capsys: pytest.CaptureFixture[str]
) -> None:
    repository = routed[0].repository
    with pytest.raises(ExportError, match=r"downstream model 'nope' is not in the repository"):
        export_router(repository, "r2", FIRST, {"hand": "nope"})
    with pytest.raises(ExportError, match=r"route for unknown label 'foot'; first stage 'tiny' has labels"):
        export_router(repository, "r2", FIRST, {"foot": FRACTURE})
    with pytest.raises(ExportError, match=r"first-stage model 'absent' is not in the repository"):
        export_router(repository, "r2", "absent", {"hand": FRACTURE})
    args = ["export-router", "r2", "--first", FIRST, "--route", "hand", "--repository", str(repository)]
    assert main(args) == EXIT_FAILURE
    assert "expected LABEL=MODEL" in capsys.readouterr().err
    assert not (repository / "r2").exists()


def test_repo_check_reports_a_router_whose_stage_was_published_anew(
    routed: tuple[TritonServer, dict[str, str], Local], tmp_path: Path
) -> None:
    repository = routed[0].repository

    def router_problems() -> list[str]:
        (router,) = (model for model in check_repository(repository).models if model.name == "router")
        assert (router.target, router.versions) == ("router", [1])
        return router.problems

    assert router_problems() == []
    other = _random_model(tmp_path, OTHER, "mobilenet_v3_small", ("x", "y", "z"), 96)
    export_checkpoint(ExportRequest(other, OTHER, repository, samples=2))  # version 2
    assert router_problems() == [
        "stage 'other' is pinned to version 1; the repository serves version 2 now: run export-router again"
    ]
