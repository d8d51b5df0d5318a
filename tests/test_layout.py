"""The package layout: one namespace, layers that point down, one settings source, small units."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ConfigurationError
from radserve.settings import ENV_PREFIX, Settings, load_settings, render_settings_table, settings_table

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("radserve", "client", "clinical", "export", "server_config", "loadtests", "synthetic")
# Functions allowed past 80 lines: data tables (each phantom builder lists the bones of one region).
DATA_TABLES = {"_hand", "_elbow", "_knee", "_pelvis", "_shoulder"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


_UPPER = ("radserve.export", "radserve.loadtests", "radserve.synthetic", "radserve.cli")


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("server_config", ("radserve.client", *_UPPER, "radserve.clinical")),
        ("client", (*_UPPER, "radserve.clinical")),
        ("clinical", _UPPER),
        ("radserve", ("radserve.client", "radserve.clinical", "radserve.server_config", *_UPPER[:3])),
    ],
)
def test_layers_point_down(folder: str, forbidden: tuple[str, ...]) -> None:
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if folder == "radserve" and "cli" in path.parts:
            continue  # the CLI dispatches to every package (lazily, inside its verbs)
        for name in _imports(path):
            if any(name == package or name.startswith(f"{package}.") for package in forbidden):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)


def test_no_bare_top_level_imports() -> None:
    """Everything is imported through the radserve namespace, never as a generic top-level name."""
    bare = ("client", "clinical", "export", "server_config", "loadtests", "synthetic")
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for folder in (*PACKAGES, "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in bare
    ]
    assert not offences, "\n".join(offences)


def test_cli_imports_packages_only_when_a_verb_runs() -> None:
    probe = (
        "import sys, radserve.cli; radserve.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'radserve') "
        "and m.startswith(('torch', 'radserve.export', 'radserve.synthetic', 'radserve.client.classify'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_units_are_small() -> None:
    too_big = []
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if len(text.splitlines()) > 400:
                too_big.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name not in DATA_TABLES:
                    length = node.end_lineno - node.lineno + 1
                    if length > 80:
                        too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)


def test_environment_overrides_every_section() -> None:
    settings = load_settings(
        {
            "RADSERVE_HOST": "0.0.0.0",
            "RADSERVE_PORTS_GRPC": "9101",
            "RADSERVE_BATCHING_PREFERRED_BATCH_SIZES": "2, 8",
            "RADSERVE_CLIENT_RETRY_GIVE_UP_AFTER_SECONDS": "7.5",
            "RADSERVE_EXPORT_MEAN": "0.5,0.5,0.5",
        }
    )
    assert settings.host == "0.0.0.0"
    assert settings.ports.grpc == 9101 and settings.grpc_url == "0.0.0.0:9101"
    assert settings.batching.preferred_batch_sizes == (2, 8)
    assert settings.client.retry_give_up_after_seconds == 7.5
    assert settings.export.mean == (0.5, 0.5, 0.5)
    assert settings.ports.http == Settings().ports.http  # untouched fields keep their defaults
    with pytest.raises(ConfigurationError, match="RADSERVE_PORTS_HTTP"):
        load_settings({"RADSERVE_PORTS_HTTP": "eighty"})


def test_every_setting_has_a_unit_and_the_site_lists_them_all() -> None:
    rows = list(settings_table())
    assert all(name.startswith(ENV_PREFIX) and unit for name, _, unit in rows), rows
    table = render_settings_table()
    assert all(f"| `{name}` |" in table for name, _, _ in rows)
    # the site's settings page is generated from this table (tests/test_docs.py checks the built page)
    assert "<!-- generated: settings -->" in (ROOT / "docs" / "reference" / "settings.md").read_text()


def test_embedded_models_are_sized_by_the_serving_host(triton) -> None:
    """The config Triton serves has this host's instance count, whatever the exporting host had."""
    import tritonclient.grpc as grpcclient

    from radserve.server_config.serving_view import host_sized_config
    from radserve.settings import SETTINGS, cpu_split

    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        config = client.get_model_config("tiny", as_json=False).config
    instances, threads = cpu_split(SETTINGS.batching.max_cpu_instances)
    assert [group.count for group in config.instance_group] == [instances]
    assert config.parameters["onnxruntime_threads"].string_value == str(threads)
    on_disk = (triton.repository / "tiny" / "config.pbtxt").read_text()
    sized, changed = host_sized_config(on_disk, instances=12, threads=3)
    assert changed and "count: 12" in sized and "radserve.host_sized" not in sized
    assert "count: 1\n" in on_disk  # the repository itself is never rewritten
    assert host_sized_config(sized, instances=2, threads=1) == (sized, False)


def test_install_adds_exactly_one_top_level_package(tmp_path: Path) -> None:
    """``pip install --no-deps .`` into an empty venv: only ``radserve`` appears (+ its dist-info)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    before = {entry.name for entry in site.iterdir()}
    source = tmp_path / "source"  # pip builds in the source tree: build a copy, not the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "model_repository", "tests"))
    environment = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", str(source)],
        check=True,
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    added = {entry.name for entry in site.iterdir()} - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"radserve"}
    probe = (
        "import importlib.util as u\n"
        "for name in ('radserve.client', 'radserve.export', 'radserve.server_config',"
        " 'radserve.loadtests', 'radserve.synthetic', 'radserve.cli'):\n"
        "    assert u.find_spec(name) is not None, name\n"
        "for name in ('client', 'export', 'server_config', 'loadtests'):\n"
        "    assert u.find_spec(name) is None, name\n"
    )
    subprocess.run([python, "-c", probe], check=True, cwd=tmp_path, timeout=60)
    installed = site / "radserve"
    assert (installed / "server_config" / "prometheus" / "rules.yml").is_file()
    assert (installed / "client" / "py.typed").is_file()
    assert (env_dir / "bin" / "radserve").is_file()


def test_config_parameter_marks_only_the_embedded_target() -> None:
    from radserve.export.model_config import build_config
    from radserve.model_card import HOST_SIZED_PARAMETER, ModelCard

    card = ModelCard(name="m", architecture="resnet18", labels=("a", "b"), input_size=(64, 64))
    embedded = build_config(card, "embedded")
    assert embedded.parameters[HOST_SIZED_PARAMETER].string_value == "true"
    assert embedded.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    for target in ("onnxruntime", "tensorrt"):
        assert HOST_SIZED_PARAMETER not in build_config(card, target).parameters


def test_no_module_name_repeats_across_the_packages() -> None:
    # a private module (leading _) is the part of its own package a verb or a step needs, imported by
    # name only inside it (radserve/cli/_bench.py is the bench verb, client/dicom/_read.py a step)
    homes: dict[str, list[str]] = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.stem not in ("__init__", "__main__") and not path.stem.startswith("_"):
                homes.setdefault(path.stem, []).append(str(path.relative_to(ROOT)))
    repeated = {name: paths for name, paths in homes.items() if len(paths) > 1}
    assert not repeated, repeated


def test_the_classify_flows_step_table_names_what_the_code_calls() -> None:
    import inspect

    from radserve.client import flow

    table = (flow.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    named = [re.split(r"\s{2,}", line.strip())[1] for line in table.splitlines()]
    assert len(named) == 6, table
    calling = "".join(inspect.getsource(f) for f in (flow.prepare_file, flow.classify_prepared, flow._row))
    for name in named:
        target: object = flow
        for part in name.split("."):
            target = getattr(target, part)
        assert callable(target), name
        assert f"{name.rsplit('.', 1)[-1]}(" in calling, f"the flow does not call {name}"


def test_other_packages_use_client_dicoms_public_api() -> None:
    dicom = ROOT / "client" / "dicom"
    private = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in PACKAGES
        for path in sorted((ROOT / folder).rglob("*.py"))
        if dicom not in path.parents
        for name in _imports(path)
        if name.startswith("radserve.client.dicom._")
    ]
    assert not private, private
