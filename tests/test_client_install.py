"""``pip install radserve`` (no extras) is the client: it keeps numpy 2 and classifies against the real
server (the session's tritonserver, which runs under this environment's numpy 1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from radserve.client import ClassifyOptions, classify_paths
from radserve.server_config.triton import TritonServer
from radserve.synthetic.dataset import SyntheticRecord
from tests._client_venv import ensure

TINY_MODEL = "tiny"  # exported by conftest's tiny_export


@pytest.fixture(scope="module")
def client_python() -> Path:
    """The client-only environment (built once under build/, see tests/_client_venv.py)."""
    return ensure()


def test_the_client_install_has_numpy_2_and_no_server_or_export_packages(client_python: Path) -> None:
    probe = (
        "import importlib.util, numpy, radserve.client.classify, radserve.client.listen.service; "
        "print(numpy.__version__); "
        "print(*[n for n in ('torch', 'onnx', 'onnxruntime', 'pytriton') if importlib.util.find_spec(n)])"
    )
    version, present = subprocess.run(
        [client_python, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert int(version.split(".")[0]) >= 2
    assert present == ""


def test_the_client_install_classifies_like_the_full_one(
    client_python: Path,
    triton: TritonServer,
    dicom_folder: Path,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
) -> None:
    output = tmp_path / "rows.jsonl"
    answer = subprocess.run(
        [
            client_python,
            "-m",
            "radserve",
            "classify",
            dicom_folder,
            "--model",
            TINY_MODEL,
            "--url",
            triton.grpc_url,
            "--output",
            output,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answer.returncode == 0, answer.stderr
    rows = {row["path"]: row for row in map(json.loads, output.read_text().splitlines())}
    assert sorted(rows) == sorted(record.path for record in dicom_records)
    reference, _ = classify_paths([dicom_folder], TINY_MODEL, ClassifyOptions(url=triton.grpc_url))
    assert len(reference) == len(dicom_records)
    for expected in reference:
        row = rows[expected.path]
        assert (row["status"], row["label"]) == ("ok", expected.label), row
        assert row["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


@pytest.mark.parametrize(
    ("verb", "package", "extra"),
    [
        (("export", "missing.pt", "--name", "m"), "torch", "export"),
        (
            ("evaluate", "in", "--model", "m", "--truth", "t.csv", "--url", "127.0.0.1:1", "--out", "o"),
            "sklearn",
            "clinical",
        ),
    ],
)
def test_a_verb_whose_extra_is_missing_names_it(
    client_python: Path, verb: tuple[str, ...], package: str, extra: str, tmp_path: Path
) -> None:
    answer = subprocess.run(
        [client_python, "-m", "radserve", *verb], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert answer.returncode == 2
    needs = f"needs {package} (not in `pip install radserve`): pip install 'radserve[{extra}]'"
    assert answer.stderr.strip() == f"radserve {verb[0]}: {needs}"
