"""MkDocs hooks: the reference and measurement pages, generated from the code and the JSON at build time.

A page asks for a generated block with a marker line ``<!-- generated: NAME -->``; :func:`on_page_markdown`
replaces it with ``BLOCKS[NAME]()``. The pages stay plain Markdown files that anyone can extend around
the markers, and the generated parts cannot go stale (tests/test_docs.py checks that every marker is
known and that the blocks list every verb, setting, field and metric).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)

__all__ = ["BLOCKS", "MARKER", "api_sources", "expand", "on_config", "on_page_markdown"]


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Iterator[tuple[object, ...]] | list[tuple[object, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------------------


def _option_rows(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, str]]:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = (
            ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.metavar or action.dest}`"
        )
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.required else f"`{default}`"
        if action.choices and not isinstance(action.choices, dict):
            shown += " (" + ", ".join(map(str, action.choices)) + ")"
        text = formatter._expand_help(action) if action.help else ""
        yield name, shown.strip(), text


def _verbs(
    parser: argparse.ArgumentParser, prefix: str
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            yield f"{prefix} {name}", helps.get(name, ""), sub
            yield from _verbs(sub, f"{prefix} {name}")


def cli_verbs() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(command, help, parser) of every ``radserve`` verb and sub-verb, in registration order."""
    from radserve.cli import build_parser

    return list(_verbs(build_parser(), "radserve"))


def cli_reference() -> str:
    """Every verb: its usage, description and options, from the argparse parsers."""
    from radserve.cli import build_parser

    top = build_parser()
    parts = [
        "## Global options",
        _table(("option", "default", "meaning"), list(_option_rows(top))),
        "## Verbs",
        _table(("command", "what it does"), [(f"[`{c}`](#{_anchor(c)})", h) for c, h, _ in cli_verbs()]),
    ]
    for command, help_text, parser in cli_verbs():
        parts.append(f"## `{command}` {{ #{_anchor(command)} }}")
        parts.append(help_text[:1].upper() + help_text[1:] + ".")
        parser.prog = command
        parts.append("```text\n" + parser.format_usage().removeprefix("usage: ").strip() + "\n```")
        rows = list(_option_rows(parser))
        if rows:
            parts.append(_table(("argument", "default", "meaning"), rows))
    return "\n\n".join(parts)


def _anchor(command: str) -> str:
    return command.replace(" ", "-")


# --- settings ------------------------------------------------------------------------------------------


def settings_reference() -> str:
    """Every ``RADSERVE_*`` variable with its default and meaning (radserve/settings.py)."""
    from radserve.settings import render_settings_table

    return render_settings_table()


# --- dataclass schemas (result rows, model card) ---------------------------------------------------------


def field_descriptions(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a class's Google-style docstring, by field name."""
    from griffe import Docstring, DocstringSectionKind

    sections = Docstring(cls.__doc__ or "").parse("google", warnings=False)
    return {
        item.name: item.description
        for section in sections
        if section.kind is DocstringSectionKind.attributes
        for item in section.value
    }


def _type_name(kind: Any) -> str:
    return kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))


def schema_table(cls: type) -> str:
    """One row per dataclass field: name, type, default, meaning."""
    described = field_descriptions(cls)
    rows = []
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            default = f"`{item.default!r}`"
        elif item.default_factory is not dataclasses.MISSING:
            default = f"`{item.default_factory()!r}`"
        else:
            default = "required"
        rows.append((f"`{item.name}`", f"`{_type_name(item.type)}`", default, described.get(item.name, "")))
    return _table(("key", "type", "default", "meaning"), rows)


def result_rows_reference() -> str:
    from radserve.client.results import ResultRow

    return schema_table(ResultRow)


def reasons_reference() -> str:
    from radserve.reasons import TRANSIENT, Reason

    return _table(
        ("`error_reason`", "transient (retried by resume and the listener)"),
        [(f"`{reason.value}`", "yes" if reason in TRANSIENT else "") for reason in Reason],
    )


def model_card_reference() -> str:
    from radserve.model_card import ModelCard

    return schema_table(ModelCard)


def input_contract_reference() -> str:
    from radserve.model_card import InputContract

    return schema_table(InputContract)


def card_figures_reference() -> str:
    """One table per record of a card's figures (radserve/card_figures.py), in its ``__all__`` order."""
    from radserve import card_figures

    return "\n\n".join(
        f"### `{name}`\n\n{schema_table(getattr(card_figures, name))}" for name in card_figures.__all__
    )


# --- metrics and alert rules ----------------------------------------------------------------------------


def metric_rows() -> list[tuple[str, str, str, str]]:
    """(name, type, labels, help) of every series the client and the listener export."""
    from prometheus_client.metrics import MetricWrapperBase

    from radserve.client.listen.listen_metrics import ListenerMetrics

    metrics = ListenerMetrics()
    rows = []
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        (family,) = collector.describe()
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = ", ".join(f"`{label}`" for label in collector._labelnames)
        rows.append((f"`{name}`", family.type, labels, family.documentation))
    return rows


def metrics_reference() -> str:
    return _table(("series", "type", "labels", "meaning"), metric_rows())


def alert_rules_reference() -> str:
    """Recording and alerting rules of server_config/prometheus/rules.yml."""
    import yaml

    rules = yaml.safe_load((ROOT / "server_config" / "prometheus" / "rules.yml").read_text())
    parts = []
    for group in rules["groups"]:
        rows = []
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            annotations = rule.get("annotations", {})
            meaning = annotations.get("summary") or annotations.get("description") or ""
            extra = f"for {rule['for']}" if "for" in rule else ""
            severity = rule.get("labels", {}).get("severity", "")
            rows.append(
                (
                    f"`{name}`",
                    "alert" if "alert" in rule else "record",
                    f"`{rule['expr']}`",
                    extra,
                    severity,
                    meaning,
                )
            )
        parts.append(
            f"### {group['name']}\n\n"
            + _table(("name", "kind", "expression", "for", "severity", "summary"), rows)
        )
    return "\n\n".join(parts)


# --- DICOM conformance ----------------------------------------------------------------------------------


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name


def scp_sop_classes() -> str:
    from pynetdicom.sop_class import Verification

    from radserve.client.listen.scp import STORAGE_CLASSES, STUDY_STORAGE_CLASSES

    rows = [(_uid_name(uid), f"`{uid}`", "SCP", "radiograph model") for uid in STORAGE_CLASSES]
    rows += [
        (_uid_name(uid), f"`{uid}`", "SCP", "`--studies` (study-level model)")
        for uid in STUDY_STORAGE_CLASSES
    ]
    rows.append((_uid_name(Verification), f"`{Verification}`", "SCP", "always"))
    return _table(("SOP class", "UID", "role", "negotiated with"), rows)


def scp_transfer_syntaxes() -> str:
    from radserve.client.listen.scp import accepted_transfer_syntaxes

    return _table(
        ("transfer syntax", "UID"), [(_uid_name(uid), f"`{uid}`") for uid in accepted_transfer_syntaxes()]
    )


def scp_association_defaults() -> str:
    """The association limits the listener inherits from pynetdicom, and its own settings."""
    from pynetdicom import AE

    from radserve.settings import SETTINGS

    ae = AE()
    listen = SETTINGS.listen
    rows = [
        ("AE title", f"`--ae-title`, default `{listen.ae_title}`; the called AE title is not checked"),
        ("port", f"`--port`, default {listen.port}; address `--host`, default {SETTINGS.host}"),
        ("simultaneous associations", f"at most {ae.maximum_associations}"),
        ("maximum PDU size received", f"{ae.maximum_pdu_size} bytes"),
        ("ARTIM, ACSE, DIMSE and network timeouts", f"{listen.network_timeout_seconds} s"),
        ("instances waiting to be classified", f"at most `--max-queue`, default {listen.max_queue}"),
        ("implementation class UID", f"`{ae.implementation_class_uid}`"),
        ("implementation version name", f"`{ae.implementation_version_name}`"),
    ]
    return _table(("policy", "value"), rows)


def scp_status_codes() -> str:
    from radserve.client.listen import scp

    meaning = {
        "SUCCESS": "Success: the instance is spooled (fsync'ed), or was already classified (duplicate)",
        "OUT_OF_RESOURCES": "Refused: Out of Resources: the queue of instances waiting is full",
        "SPOOL_FAILED": "Refused: Out of Resources: the spool could not be written",
        "CANNOT_UNDERSTAND": "Error: Cannot Understand: the data set of the request could not be read",
    }
    return _table(
        ("status", "meaning"), [(f"`0x{getattr(scp, name):04X}`", text) for name, text in meaning.items()]
    )


# --- measurements ---------------------------------------------------------------------------------------


def _committed(path: Path) -> str:
    """The date the file was last committed (its mtime outside a git checkout)."""
    try:
        date = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = ""
    if not date:
        import datetime

        date = datetime.date.fromtimestamp(path.stat().st_mtime).isoformat()
    return date


def _measured(paths: list[Path]) -> str:
    dates = sorted({_committed(path) for path in paths})
    return "Measured " + (dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}")


def _bench_files(prefix: str) -> list[Path]:
    return sorted(
        path
        for path in (DOCS / "bench").glob("*.json")
        if path.name.startswith("system-") == (prefix == "system-")
    )


def _machine(results: list[dict[str, Any]]) -> str:
    cores = sorted({result["cpu_count"] for result in results})
    loads = [result["load_average_before"] for result in results]
    return (
        f"{'/'.join(map(str, cores))} CPU cores, load average {min(loads)} to {max(loads)} before the runs, "
        f"{results[0]['repeats']} runs of {results[0]['seconds_per_run']} s per point"
    )


def bench_measurements() -> str:
    """The benchmark table of every model, the tuning tables, and each model's plot."""
    from radserve.loadtests.tables import bench_table, tune_table

    files = [path for path in _bench_files("") if not path.name.startswith("tune-")]
    results = [json.loads(path.read_text()) for path in files]
    parts = [
        f"{_measured(files)} by `make bench-docs` (ONNX Runtime on the CPU); machine: {_machine(results)}.",
        bench_table(results),
    ]
    tune = sorted((DOCS / "bench").glob("tune-*.json"))
    for path in tune:
        parts += [
            f"### Tuning: `{path.name}`",
            f"{_measured([path])} by `make bench-tune`.",
            tune_table(json.loads(path.read_text())),
        ]
    for path, result in zip(files, results, strict=True):
        parts.append(f"### {result['architecture']} {result['precision']} @ {result['input_size'][0]}")
        warnings = result.get("warnings") or []
        parts += [f"!!! warning\n    {_cell(text)}" for text in warnings]
        plot = path.with_suffix(".png")
        if plot.exists():
            parts.append(f"![{path.stem}](../bench/{plot.name})")
    return "\n\n".join(parts)


def bench_cpu_measurements() -> str:
    """Where the cores went at each model's best served point (the bench's CPU profile)."""
    from radserve.loadtests.points import config_label

    rows = []
    for path in _bench_files(""):
        if path.name.startswith("tune-"):
            continue
        result = json.loads(path.read_text())
        profile = result.get("cpu_profile")
        if not profile:
            continue
        costs = profile["cpu_ms_per_image"]
        rows.append(
            (
                f"{result['architecture']} {result['precision']}, "
                f"{config_label(profile['concurrency'], profile['per_request'])}",
                f"{profile['raw_engine_cpu_ms_per_image']:.2f}",
                f"{costs['client']:.2f} + {costs['tritonserver']:.2f} + {costs['backends']:.2f} "
                f"= {costs['total']:.2f}",
                f"{profile['outside_engine_cpu_ms_per_image']:.2f}",
                f"{profile['served_over_raw_bound']:.2f}",
                f"{result['ratios']['served_over_raw']:.2f}",
                f"{costs['machine_busy_share']:.0%}",
            )
        )
    header = (
        "model, served point",
        "engine ms (raw)",
        "served ms: client + tritonserver + backends",
        "outside the engine ms",
        "served/raw bound",
        "served/raw measured",
        "machine busy",
    )
    return _table(header, rows)


def systems_bench_measurements() -> str:
    from radserve.loadtests.tables import systems_table

    files = _bench_files("system-")
    results = [json.loads(path.read_text()) for path in files]
    return "\n\n".join(
        [
            f"{_measured(files)} by `make bench-systems` (random-init study architectures at their study "
            f"input sizes); machine: {_machine(results)}.",
            systems_table(results),
        ]
    )


def _ci(values: list[float] | None) -> str:
    return f" ({values[0]:.3f}-{values[1]:.3f})" if values else ""


def systems_demo_measurements() -> str:
    folder = DOCS / "systems"
    trainings = sorted(folder.glob("*-training.json"))
    rows = []
    for path in trainings:
        name = path.name.removesuffix("-training.json")
        training = json.loads(path.read_text())
        evaluation_path = folder / f"{name}-evaluation.json"
        evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.exists() else {}
        held_out = training.get("held_out_accuracy")
        rows.append(
            (
                name,
                training.get("architecture") or training.get("plan", {}).get("architecture", "detector"),
                f"{training['seconds']:.0f} s",
                "-" if held_out is None else f"{held_out:.3f}",
                f"{evaluation['accuracy']:.3f}{_ci(evaluation.get('accuracy_ci'))}" if evaluation else "-",
                f"{evaluation['macro_auroc']:.3f}{_ci(evaluation.get('macro_auroc_ci'))}"
                if evaluation
                else "-",
                f"{evaluation['ece']:.3f}" if evaluation else "-",
                evaluation.get("n", "-"),
            )
        )
    header = (
        "system",
        "architecture",
        "training time",
        "held-out accuracy (training)",
        "served accuracy (95 % CI)",
        "served macro AUROC (95 % CI)",
        "ECE",
        "served n",
    )
    parts = [
        f"{_measured(trainings)} by `make demo-systems` (the reports do not record the machine; "
        "training time is wall time on it).",
        _table(header, rows),
    ]
    parts += [f"![{plot.stem}](../systems/{plot.name})" for plot in sorted(folder.glob("*.png"))]
    return "\n\n".join(parts)


def peers_measurements() -> str:
    """radserve against the other servers, one table per model (``docs/bench/peers/*.json``)."""
    from radserve.loadtests.peer_report import peers_table

    files = sorted((DOCS / "bench" / "peers").glob("*.json"))
    if not files:
        return "Not measured yet: `make bench-peers` writes `docs/bench/peers/*.json`."
    parts = [f"{_measured(files)} by `make bench-peers` (ONNX Runtime on the CPU)."]
    for path in files:
        data = json.loads(path.read_text())
        parts += [
            f"### {data['architecture']} {data['precision']} @ {data['input_size'][0]}",
            peers_table(data),
        ]
    return "\n\n".join(parts)


def engines_measurements() -> str:
    """The CPU engines per architecture, one row per model (``docs/bench/engines/*.json``)."""
    from radserve.loadtests.engines import engines_summary

    files = sorted((DOCS / "bench" / "engines").glob("*.json"))
    if not files:
        return "Not measured yet: `make bench-engines` writes `docs/bench/engines/*.json`."
    runs = sorted((json.loads(path.read_text()) for path in files), key=lambda data: data["model"])
    first = runs[0]
    versions = ", ".join(f"{name} {version}" for name, version in first["versions"].items())
    return "\n\n".join(
        (
            f"{_measured(files)} by `make bench-engines` on {first['cpu_count']} cores ({versions}); "
            f"median (range) of {first['repeats']} interleaved runs per point, each engine at its best "
            "layout and batch; one run per model, so ratios compare within a row. The cores were "
            "shared with other work (each row's load average): absolute img/s are low and move "
            "between rows.",
            engines_summary(runs),
        )
    )


def gpu_measurements() -> str:
    from radserve.loadtests.gpu_report import render_markdown

    parts = []
    for path in sorted((DOCS / "gpu").glob("*.json")):
        body = render_markdown(json.loads(path.read_text())).split("\n", 1)[1]  # its own "# GPU check" title
        body = re.sub(r"^#", "###", body, flags=re.MULTILINE)
        parts += [
            f"## `{path.name}`",
            f"{_measured([path])} by `make gpu-bundle` and its `check.sh` on the GPU host.",
            body,
        ]
    return "\n\n".join(parts)


BLOCKS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "settings": settings_reference,
    "result-rows": result_rows_reference,
    "reasons": reasons_reference,
    "model-card": model_card_reference,
    "input-contract": input_contract_reference,
    "card-figures": card_figures_reference,
    "metrics": metrics_reference,
    "alert-rules": alert_rules_reference,
    "scp-sop-classes": scp_sop_classes,
    "scp-transfer-syntaxes": scp_transfer_syntaxes,
    "scp-association": scp_association_defaults,
    "scp-status-codes": scp_status_codes,
    "bench": bench_measurements,
    "bench-cpu": bench_cpu_measurements,
    "bench-systems": systems_bench_measurements,
    "systems-demo": systems_demo_measurements,
    "gpu": gpu_measurements,
    "peers": peers_measurements,
    "engines": engines_measurements,
}


def expand(markdown: str, page: str = "") -> str:
    """``markdown`` with each marker line replaced by its generated block."""

    def block(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in BLOCKS:
            raise KeyError(f"{page}: unknown generated block {name!r} (known: {', '.join(BLOCKS)})")
        return BLOCKS[name]()

    return MARKER.sub(block, markdown)


def api_sources(folder: Path) -> Path:
    """A copy of the sources laid out as the installed namespace (``client/`` as ``radserve/client``), so
    that mkdocstrings reads ``radserve.client`` without importing it (griffe does not follow links)."""
    tree = folder / "radserve"
    if tree.exists():
        shutil.rmtree(tree)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "radserve", tree, ignore=ignore)
    shutil.copytree(ROOT / "client", tree / "client", ignore=ignore)
    return folder


@event_priority(100)  # before mkdocstrings' own on_config, which drops search paths that do not exist
def on_config(config: Any, **_: Any) -> Any:
    """MkDocs event: lay out the API sources before mkdocstrings looks for them."""
    api_sources(ROOT / "build" / "api-sources")
    return config


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs event: expand the page's markers."""
    return expand(markdown, page.file.src_uri)
