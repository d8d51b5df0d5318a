"""Result files: --resume redoes transient errors and keys on resolved paths; rows are fsync'ed."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from radserve.client.results import ResultRow, ResultWriter, completed_paths


def _rows() -> list[ResultRow]:
    return [
        ResultRow("in/a.dcm", "ok", label="chest", score=0.9),
        ResultRow("in/b.dcm", "error", error_reason="deadline_exceeded", error="in/b.dcm: late"),
        ResultRow("in/c.dcm", "error", error_reason="not_dicom", error="in/c.dcm: not DICOM"),
        ResultRow("in/d.dcm", "error", error_reason="overloaded", error="in/d.dcm: shed"),
        ResultRow("in/e.dcm", "error", error_reason="server_unavailable", error="in/e.dcm: down"),
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_redoes_transient_errors_and_matches_resolved_paths(
    suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # rows hold the relative paths a user typed
    output = tmp_path / f"results{suffix}"
    with ResultWriter(output) as writer:
        for row in _rows():
            writer.write([row])
    done = completed_paths(output)
    assert done == {str(tmp_path / "in" / "a.dcm"), str(tmp_path / "in" / "c.dcm")}
    text = output.read_text()
    if suffix == ".csv":
        kept = [row["path"] for row in csv.DictReader(text.splitlines())]
    else:
        kept = [json.loads(line)["path"] for line in text.splitlines()]
    assert kept == ["in/a.dcm", "in/c.dcm"]  # the transient rows make way for the new ones
    with ResultWriter(output, append=True) as writer:
        writer.write([ResultRow("in/b.dcm", "ok")])
    assert completed_paths(output) == done | {str(tmp_path / "in" / "b.dcm")}


def test_rows_are_fsynced_per_batch_and_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    writer = ResultWriter(tmp_path / "rows.jsonl", fsync_rows=10, fsync_seconds=3600)
    for index in range(25):
        writer.write([ResultRow(f"{index}.dcm", "ok")])
    assert len(synced) == 2
    writer.close()
    assert len(synced) == 3
