"""The command line's error boundary: one line and exit code 2 for everything it reports, bad settings
included; foreign exceptions (onnx, torch, OSError) mapped to radserve's where they enter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from radserve.cli import EXIT_FAILURE
from radserve.errors import ConfigurationError, ExportError
from radserve.model_card import OUTPUT_NAME, ModelCard


def _radserve(*arguments: str | Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """``python -m radserve ARGUMENTS`` in a fresh process (settings are parsed at its import)."""
    return subprocess.run(
        [sys.executable, "-m", "radserve", *map(str, arguments)],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=300,
    )


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("RADSERVE_PORTS_HTTP", "eighty", "not a valid int"),
        ("RADSERVE_EXPORT_MEAN", "0.5,0.5", "3 comma-separated values expected, got 2"),
        ("RADSERVE_BATCHING_PREFERRED_BATCH_SIZES", "4,eight", "not a valid tuple"),
    ],
)
def test_a_malformed_setting_is_one_line_without_traceback(variable: str, value: str, problem: str) -> None:
    answer = _radserve("systems", **{variable: value})
    assert answer.returncode == EXIT_FAILURE, answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert f"{variable}={value!r}" in lines[0] and problem in lines[0]
    assert answer.stdout == ""
    verbose = _radserve("-v", "systems", **{variable: value})
    assert verbose.returncode == EXIT_FAILURE
    assert "Traceback" in verbose.stderr and "ConfigurationError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[0]  # the same line closes the traceback


def test_an_argument_refused_by_a_verb_is_one_line() -> None:
    answer = _radserve("explain", "x.dcm", "--model", "m", "--output", "x.jpg", "--url", "127.0.0.1:1")
    assert answer.returncode == EXIT_FAILURE
    assert answer.stderr.strip() == "radserve explain: x.jpg: output must end in .png"


def test_an_opset_below_17_is_refused_and_nothing_published(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Before: onnxscript's traceback, then an opset 18 model published with exit 0 (issue 23)."""
    repository = tmp_path / "repository"
    answer = _radserve(
        "export", tiny_checkpoint, "--name", "low", "--repository", repository, RADSERVE_EXPORT_OPSET="12"
    )
    assert answer.returncode == EXIT_FAILURE, answer.stderr
    assert answer.stderr.strip().splitlines()[-1] == (
        "radserve export: RADSERVE_EXPORT_OPSET=12: radserve writes ONNX opset 17 or newer"
    )
    assert "Traceback" not in answer.stderr
    assert not (repository / "low").exists()


class _Mean(torch.nn.Module):
    """The smallest graph with the wire signature: uint8 images in, softmax over two labels out."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pooled = image.float().mean(dim=(2, 3))
        return torch.softmax(torch.cat([pooled, -pooled], dim=1), dim=1)


def test_an_opset_the_exporter_does_not_write_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """torch 2.14 falls back to opset 18 when it cannot convert (here to 30, past onnx's newest)."""
    from radserve.export import onnx_export

    card = ModelCard(name="m", architecture="resnet18", labels=("a", "b"), input_size=(16, 16))
    path = tmp_path / "model.onnx"
    monkeypatch.setattr(onnx_export, "OPSET", 30)
    with pytest.raises(ExportError, match=r"RADSERVE_EXPORT_OPSET=30 could not be honoured .*opset 18"):
        onnx_export.export_onnx(_Mean(), card, path, graph=_Mean())
    assert not path.exists()
    monkeypatch.setattr(onnx_export, "OPSET", 21)  # one it can write: same call, honoured
    model = onnx_export.export_onnx(_Mean(), card, path, graph=_Mean())
    assert onnx_export.default_opset(model) == 21 and path.is_file()


def test_onnx_checker_errors_become_export_errors() -> None:
    from radserve.export.onnx_export import check_onnx

    node = onnx.helper.make_node("Relu", ["missing"], [OUTPUT_NAME])
    graph = onnx.helper.make_graph(
        [node],
        "broken",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.UINT8, [1, 1, 8, 8])],
        [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, [1, 2])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    with pytest.raises(ExportError, match=r"ONNX checker: .*missing"):
        check_onnx(model)


def test_an_unwritable_results_file_is_a_configuration_error(tmp_path: Path) -> None:
    from radserve.client.results import ResultWriter

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match=re.escape(f"{blocker}/rows.jsonl: cannot write results")):
        ResultWriter(blocker / "rows.jsonl")
    with pytest.raises(ValueError, match=r"must end in \.jsonl or \.csv"):  # also a ValueError for callers
        ResultWriter(tmp_path / "rows.txt")


def test_a_server_that_does_not_answer_is_one_line(dicom_folder: Path) -> None:
    """gRPC's failure (tritonclient's InferenceServerException) becomes a ServerError where it enters."""
    from radserve.server_config.triton import free_ports

    url = f"127.0.0.1:{free_ports().grpc}"  # nothing listens there
    answer = _radserve(
        "classify", dicom_folder, "--model", "m", "--url", url, RADSERVE_CLIENT_READY_TIMEOUT_SECONDS="1"
    )
    assert answer.returncode == EXIT_FAILURE
    last = answer.stderr.strip().splitlines()[-1]
    assert last.startswith(f"radserve classify: {url}: ") and "Traceback" not in answer.stderr
