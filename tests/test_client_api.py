"""The Python API: same rows from every call style as from the CLI, honest failures, crash isolation."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import radserve.client
from radserve.cli import main
from radserve.client import ClassifyOptions, DecodeWorkersError, classify_paths
from radserve.client.decode_pool import DecodePool
from radserve.client.flow import PreparedFile
from radserve.export.pipeline import ExportResult
from radserve.server_config.triton import TritonServer
from radserve.server_config.triton_metrics import counters_since, model_counters

TINY_MODEL = "tiny"
TESTS = Path(__file__).parent

# Prints every row as one JSON line; no main guard, on purpose.
_PRINT_ROWS = """
import json
from radserve.client import ClassifyOptions, classify_paths
rows, summary = classify_paths([{folder!r}], {model!r}, ClassifyOptions(url={url!r}, workers=2))
for row in rows:
    print(json.dumps(row.to_dict()))
"""

_IN_A_SERVICE = """
import asyncio, json
from radserve.client import ClassifyOptions, classify, classify_paths
from radserve.client.inputs import discover

async def service():
    options = ClassifyOptions(url={url!r}, workers=2)
    rows = []
    await classify(discover([{folder!r}]).files, {model!r}, rows.extend, options)
    blocking, _ = classify_paths([{folder!r}], {model!r}, options)  # called inside the running loop
    return rows, blocking

rows, blocking = asyncio.run(service())
for row in rows:
    print(json.dumps(row.to_dict()))
print("BLOCKING")
for row in blocking:
    print(json.dumps(row.to_dict()))
"""


def _python(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _rows(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by key without the latency, probabilities kept apart (compared within 1e-5)."""
    ordered = sorted(rows, key=lambda row: (row["path"], row["sop_instance_uid"], row["frame"] or 0))
    return [{k: v for k, v in row.items() if k != "latency_ms"} for row in ordered]


def _assert_same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    got, expected = _comparable(got), _comparable(expected)
    assert [row["path"] for row in got] == [row["path"] for row in expected]
    for mine, theirs in zip(got, expected, strict=True):
        assert {k: v for k, v in mine.items() if k != "probabilities"} == {
            k: v for k, v in theirs.items() if k != "probabilities"
        }
        assert mine["probabilities"].keys() == theirs["probabilities"].keys()
        for label, p in mine["probabilities"].items():
            assert p == pytest.approx(theirs["probabilities"][label], abs=1e-5)


def _cli(triton: TritonServer, folder: Path, output: Path) -> int:
    """``radserve classify`` in this process, rows to ``output``."""
    return main(
        [
            "classify",
            str(folder),
            "--model",
            TINY_MODEL,
            "--url",
            triton.grpc_url,
            "--output",
            str(output),
            "-q",
        ]
    )


def _jupyter_rows(code: str) -> list[dict[str, Any]]:
    jupyter_client = pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    manager, client = jupyter_client.manager.start_new_kernel(kernel_name="python3")
    lines: list[str] = []

    def collect(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
            lines.append(message["content"]["text"])

    try:
        reply = client.execute_interactive(code, output_hook=collect, timeout=240)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    return _rows("".join(lines))


def test_every_call_style_gives_the_rows_of_the_cli(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "cli.jsonl"
    code = _cli(triton, dicom_folder, output)
    assert code == 0
    expected = _rows(output.read_text())
    assert len(expected) == 15 and all(row["status"] == "ok" for row in expected)

    script = _PRINT_ROWS.format(folder=str(dicom_folder), model=TINY_MODEL, url=triton.grpc_url)
    (tmp_path / "no_guard.py").write_text(script)
    styles = {
        "script without a main guard": _python(str(tmp_path / "no_guard.py")),
        "python -": _python("-", stdin=script),
        "python -c": _python("-c", script),
    }
    service = _python(
        "-c", _IN_A_SERVICE.format(folder=str(dicom_folder), model=TINY_MODEL, url=triton.grpc_url)
    )
    styles["awaited in an asyncio service"], styles["blocking, inside a running loop"] = service.split(
        "BLOCKING"
    )
    for style, printed in styles.items():
        rows = _rows(printed)
        assert len(rows) == len(expected), (style, printed)  # no extra runs from re-imported scripts
        _assert_same_rows(rows, expected)
    _assert_same_rows(_jupyter_rows(script), expected)


def _twice(folder: Path, target: Path) -> list[Path]:
    """Two copies of the fixture's radiographs under ``target``: 15 distinct ones, each twice."""
    for copy in ("a", "b"):
        shutil.copytree(folder, target / copy)
    return sorted(target.rglob("*.dcm"))


def test_a_crashing_decoder_costs_only_its_own_file(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "inputs"
    good = _twice(dicom_folder, folder)
    shutil.copyfile(good[0], folder / "segfault.dcm")
    shutil.copyfile(good[1], folder / "internal.dcm")
    options = ClassifyOptions(url=triton.grpc_url, workers=2, decode_worker_imports=("_decode_hooks",))
    rows, summary = classify_paths([folder], TINY_MODEL, options)
    by_path = {str(Path(row.path).relative_to(folder)): row for row in rows}
    assert len(rows) == len(by_path) == 32 and summary.files == 32
    assert sum(row.status == "ok" for row in rows) == 30
    crashed = by_path["segfault.dcm"]
    assert crashed.error_reason == "decoder_crashed" and "SIGSEGV" in crashed.error, crashed
    failed = by_path["internal.dcm"]
    assert failed.error_reason == "internal_error"
    assert "ZeroDivisionError: a bug in the resize step" in failed.error and str(folder) in failed.error


def test_a_hung_decoder_times_out_and_a_capped_one_fails_alone(
    tiny_export: ExportResult, dicom_folder: Path, tmp_path: Path
) -> None:
    good = sorted(dicom_folder.rglob("*.dcm"))[0]
    hung, allocating = tmp_path / "hang.dcm", tmp_path / "allocate.dcm"
    for copy in (hung, allocating):
        shutil.copyfile(good, copy)

    async def prepare_all() -> list[PreparedFile]:
        async with DecodePool(1, ("_decode_hooks",), timeout=3, memory_bytes=2 << 30) as pool:
            return [await pool.prepare(str(path), tiny_export.card) for path in (hung, allocating, good)]

    timed_out, capped, decoded = asyncio.run(prepare_all())
    assert timed_out.error_reason == "decode_timeout" and "within 3 s" in timed_out.error, timed_out
    assert capped.error_reason == "internal_error" and "MemoryError" in capped.error, capped
    assert not decoded.error_reason and decoded.radiographs  # the replacement worker goes on


def test_decode_workers_that_cannot_start_are_one_error_for_the_run(
    triton: TritonServer,
    dicom_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = ClassifyOptions(
        url=triton.grpc_url, workers=2, decode_worker_imports=("radserve_no_such_module",)
    )
    with pytest.raises(DecodeWorkersError, match="decode workers could not start: ModuleNotFoundError"):
        classify_paths([dicom_folder], TINY_MODEL, options)
    output = tmp_path / "rows.jsonl"
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    code = _cli(triton, dicom_folder, output)
    assert code == 2
    assert "decode workers could not start:" in capsys.readouterr().err
    assert not output.exists() or output.read_text() == ""


def test_radiographs_ready_together_share_requests_with_one_row_each(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    import asyncio

    from radserve.client import ResultRow, classify

    files = _twice(dicom_folder, tmp_path / "inputs")
    under_way: list[int] = []
    taken = 0

    def lazily() -> Any:  # counts how far the run has read the input list
        nonlocal taken
        for path in files:
            taken += 1
            yield path

    def run(images_per_request: int) -> list[ResultRow]:
        rows: list[ResultRow] = []

        def on_rows(new: list[ResultRow]) -> None:
            rows.extend(new)
            under_way.append(taken - len(rows) + 1)

        options = ClassifyOptions(
            url=triton.grpc_url, max_in_flight=2, images_per_request=images_per_request, workers=2
        )
        asyncio.run(classify(lazily(), TINY_MODEL, on_rows, options))
        return rows

    single = run(1)
    before = model_counters(triton.metrics_url, TINY_MODEL)
    under_way.clear()
    taken = 0
    packed = run(8)
    served = model_counters(triton.metrics_url, TINY_MODEL) - before
    assert served.inferences == len(files)
    assert max(under_way) <= 2 * 2  # files under way never exceed 2 x max_in_flight
    _assert_same_rows([row.to_dict() for row in packed], [row.to_dict() for row in single])
    assert Counter(row.status for row in packed) == {"ok": len(files)}


def test_radiographs_waiting_for_the_wire_travel_together(triton: TritonServer) -> None:
    import asyncio

    import numpy as np

    from radserve.client import AsyncRadiographClient
    from radserve.client.packing import RequestPacker
    from radserve.client.run_metrics import ClientMetrics

    images = np.random.default_rng(9).integers(0, 256, (24, 1, 64, 64), dtype=np.uint8)

    async def answers() -> tuple[list[Any], Any]:
        async with AsyncRadiographClient(triton.grpc_url) as client:
            alone = await client.infer(TINY_MODEL, images)
            async with RequestPacker(
                client, TINY_MODEL, images_per_request=8, max_in_flight=8, metrics=ClientMetrics()
            ) as packer:
                return list(await asyncio.gather(*(packer.infer(image) for image in images))), alone

    before = model_counters(triton.metrics_url, TINY_MODEL)
    packed, alone = asyncio.run(answers())
    served = counters_since(triton.metrics_url, TINY_MODEL, before, requests=1 + len(images) // 8)
    assert served.inferences == 2 * len(images)
    assert served.requests == 1 + len(images) // 8  # the reference request, then three of eight
    assert {len(prediction.probabilities) for _, prediction in packed} == {8}
    np.testing.assert_allclose(np.stack([p for p, _ in packed]), alone.probabilities, atol=1e-5)


def _api_overview() -> str:
    """The Python API page's overview (docs/reference/python-api.md), before its generated part."""
    page = (TESTS.parent / "docs" / "reference" / "python-api.md").read_text()
    return page.split("\n## Overview\n", 1)[1].split("\n## ", 1)[0]


def _readme_snippets() -> list[str]:
    """The Python examples of the README and of the API page's overview."""
    texts = [(TESTS.parent / "README.md").read_text(), _api_overview()]
    return [block.split("\n```", 1)[0] for text in texts for block in text.split("```python\n")[1:]]


def test_readme_python_snippets_run_against_the_server(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path
) -> None:
    """Each snippet as a user runs it: saved as a script, or pasted into ``python -`` (the two ways a
    ``spawn`` worker must re-import differently; each way runs every other snippet, both are covered)."""
    snippets = _readme_snippets()
    assert len(snippets) >= 4
    host, port = triton.grpc_url.rsplit(":", 1)
    env = dict(os.environ, RADSERVE_HOST=host, RADSERVE_PORTS_GRPC=port)
    for index, snippet in enumerate(snippets):
        how = ("script", "stdin")[index % 2]
        assert '"demo"' in snippet  # the documented model name, replaced by the test model's
        code = snippet.replace('"demo"', repr(TINY_MODEL)).replace(
            '"/data/incoming"', repr(str(dicom_folder))
        )
        if how == "script":
            (tmp_path / f"snippet{index}.py").write_text(code)
            args: list[str] = [str(tmp_path / f"snippet{index}.py")]
        else:
            args = ["-"]
        done = subprocess.run(
            [sys.executable, *args],
            input=code if how == "stdin" else None,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (snippet, done.stderr)
        if "/data/incoming" in snippet:
            for path in dicom_folder.glob("*.dcm"):
                assert str(path) in done.stdout, (snippet, done.stdout)
        else:  # the probabilities of one radiograph, by label
            probabilities = ast.literal_eval(done.stdout.strip())
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)


def test_the_public_surface_is_small_typed_and_documented() -> None:
    import inspect

    # the API page's overview, or the design page's client session section
    design = (TESTS.parent / "docs" / "design.md").read_text().split("\n## Client session", 1)[1]
    readme = _api_overview() + design.split("\n## ", 1)[0]
    for name in radserve.client.__all__:
        item = getattr(radserve.client, name)
        assert inspect.getdoc(item), f"{name} has no docstring"
        if not name.endswith("Error") and name != "ModelCard":
            assert f"`{name}`" in readme, f"{name} is exported but documented on neither page"
    for function in (radserve.client.classify, radserve.client.classify_paths):
        hints = function.__annotations__
        assert "return" in hints and all(p in hints for p in inspect.signature(function).parameters)
