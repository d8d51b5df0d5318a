"""The documentation site: it builds in strict mode, its reference pages are generated from the code
and list everything the code has, and nothing in the repository cites a file that is not in it."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()


def _pages() -> dict[str, str]:
    return {str(path.relative_to(DOCS)): path.read_text() for path in sorted(DOCS.rglob("*.md"))}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs` builds it (strict: any warning fails the build)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [Path(sys.executable).parent / "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _text(site: Path, page: str) -> str:
    html = (site / page / "index.html").read_text()
    return re.sub(r"<[^>]+>", "", html).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")


def test_every_marker_names_a_block_and_every_block_is_on_a_page() -> None:
    used = {name for text in _pages().values() for name in HOOKS.MARKER.findall(text)}
    assert used <= set(HOOKS.BLOCKS), used - set(HOOKS.BLOCKS)
    assert set(HOOKS.BLOCKS) <= used, set(HOOKS.BLOCKS) - used
    with pytest.raises(KeyError, match="no-such-block"):
        HOOKS.expand("<!-- generated: no-such-block -->", "page.md")


def test_the_site_shows_every_verb_and_option(site: Path) -> None:
    text = _text(site, "reference/cli")
    verbs = HOOKS.cli_verbs()
    for must in ("classify", "serve", "export", "listen", "evaluate", "bench", "deploy", "deploy render"):
        assert f"radserve {must}" in {command for command, _, _ in verbs}
    for command, _, parser in verbs:
        assert command in text
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in text, (command, flag)


def test_the_site_shows_every_setting(site: Path) -> None:
    from radserve.settings import settings_table

    text = _text(site, "reference/settings")
    rows = list(settings_table())
    assert len(rows) > 50
    for name, _default, unit in rows:
        assert name in text and " ".join(unit.split()) in text, name


def test_the_site_documents_the_python_api(site: Path) -> None:
    import radserve.client

    html = (site / "reference" / "python-api" / "index.html").read_text()
    for name in radserve.client.__all__:
        anchor = "radserve.client.classify.classify" if name == "classify" else f"radserve.client.{name}"
        assert f'id="{anchor}"' in html, name


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("radserve.client.results", "ResultRow"),
        ("radserve.model_card", "ModelCard"),
        ("radserve.model_card", "InputContract"),
    ],
)
def test_every_field_of_rows_and_cards_is_described(module: str, name: str) -> None:
    """The result row and model card tables come from the classes' Attributes sections."""
    cls = getattr(__import__(module, fromlist=[name]), name)
    described = HOOKS.field_descriptions(cls)
    fields = [item.name for item in dataclasses.fields(cls)]
    assert [field for field in fields if not described.get(field)] == []
    assert sorted(set(described) - set(fields)) == []  # no description of a field that is gone
    table = HOOKS.schema_table(cls)
    assert all(f"| `{field}` |" in table for field in fields)


def test_the_metrics_reference_lists_every_exported_series(site: Path) -> None:
    """Checked against what the client and the listener actually expose, not against the table."""
    from prometheus_client import generate_latest

    from radserve.client.listen.listen_metrics import ListenerMetrics

    metrics = ListenerMetrics()
    metrics.model("m")
    exposed = set(re.findall(r"^# TYPE (\S+) ", generate_latest(metrics.registry).decode(), re.MULTILINE))
    text = _text(site, "reference/metrics")
    series = {family for family in exposed if not family.endswith("_created")}  # client library's own
    assert len(series) >= 10
    for family in series:
        assert family in text, family
    for alert in re.findall(
        r"- (?:alert|record): (\S+)", (ROOT / "server_config/prometheus/rules.yml").read_text()
    ):
        assert alert in text, alert


def test_the_conformance_statement_lists_what_the_listener_negotiates(site: Path) -> None:
    from radserve.client.listen.scp import STORAGE_CLASSES, accepted_transfer_syntaxes

    text = _text(site, "reference/conformance")
    for uid in (*STORAGE_CLASSES, *accepted_transfer_syntaxes()):
        assert uid in text, uid
    for section in ("Implementation model", "AE specifications", "Association policies", "Security"):
        assert section in text


def test_measurement_pages_are_generated_from_every_json(site: Path) -> None:
    import json

    bench = _text(site, "measurements/bench")
    for path in sorted((DOCS / "bench").glob("*.json")):
        result = json.loads(path.read_text())
        page = bench if not path.name.startswith("system-") else _text(site, "measurements/systems")
        assert f"{result['ratios']['served_over_raw']:.2f}" in page, path.name
    assert "Measured 20" in bench and "make bench-docs" in bench


_CITATION = re.compile(r"\b(docs/[\w/.-]+\.md)(?:, [\"']([^\"']+)[\"'])?")


def test_citations_name_pages_and_sections_that_exist() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    offences = []
    for name in files.split():
        path = ROOT / name
        if (
            not path.is_file()
            or path.suffix not in (".py", ".toml", ".md", ".yml", ".cfg", "")
            or "schemas" in name
        ):
            continue
        text = path.read_text(errors="replace")
        if name != "tests/test_docs.py" and re.search(
            r"\bDESIGN\.md\b|\bFACTS(\.md)?\b|(?<!\w )README, [\"']", text
        ):
            # another project's README is cited by its name ("Triton's python_backend README, '...'")
            offences.append(f"{name}: cites a file outside the repository or a README section")
        for page, section in _CITATION.findall(text):
            target = ROOT / page
            if not target.is_file():
                offences.append(f"{name}: {page} does not exist")
            elif section and not re.search(rf"^#+ .*{re.escape(section)}", target.read_text(), re.MULTILINE):
                offences.append(f"{name}: {page} has no section {section!r}")
    assert not offences, "\n".join(offences)


def test_the_readme_is_short_and_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "`make demo`" in readme and "`make test`" in readme


def test_every_page_is_in_the_navigation() -> None:
    """A page outside ``nav`` builds but nobody finds it: new pages go into mkdocs.yml."""
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def listed(items: list) -> set[str]:
        pages = set()
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            pages |= listed(value) if isinstance(value, list) else {value}
        return pages

    excluded = {str(path.relative_to(DOCS)) for path in DOCS.glob("gpu/*.md")}  # exclude_docs
    assert set(_pages()) - excluded == listed(config["nav"])
