"""One long-lived client session: decode workers started once, rows streamed, one set of connection flags."""

from __future__ import annotations

import argparse
import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from radserve.cli import build_parser
from radserve.cli._common import CONNECTION_FLAGS, connection_of
from radserve.client import (
    ClassifyOptions,
    ConnectionOptions,
    ResultRow,
    RetryPolicy,
    Session,
    SyncSession,
    classify_paths,
)
from radserve.server_config.triton import TritonServer
from radserve.transport import ClientTls
from tests.test_client_api import _assert_same_rows

TINY_MODEL = "tiny"
PIDS_ENV = "RADSERVE_TEST_WORKER_PIDS"  # tests/_decode_hooks.py appends each worker's pid there


def _started(pids: Path) -> list[str]:
    return pids.read_text().split() if pids.exists() else []


def test_one_session_starts_its_workers_once_and_replaces_a_crashed_one(
    triton: TritonServer, dicom_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    monkeypatch.setenv(PIDS_ENV, str(pids))
    files = sorted(dicom_folder.glob("*.dcm"))
    crash = tmp_path / "segfault.dcm"
    shutil.copyfile(files[0], crash)
    options = ClassifyOptions(url=triton.grpc_url, workers=2, decode_worker_imports=("_decode_hooks",))
    batches = [files[:5], [crash, *files[5:9]], files[9:14]]
    runs: list[list[ResultRow]] = []
    with SyncSession(TINY_MODEL, options) as session:
        assert len(_started(pids)) == 2
        for batch in batches:
            run = session.classify(batch)
            runs.append([row for rows in run for row in rows])
            assert run.summary.files == len(batch) == len(runs[-1])
    # Two workers at the start, and two for the crashing file (it is tried once more, alone).
    assert len(set(_started(pids))) == 4
    crashed = [row for row in runs[1] if row.path == str(crash)]
    assert [row.error_reason for row in crashed] == ["decoder_crashed"]
    assert all(row.status == "ok" for run in (runs[0], runs[2]) for row in run)
    # The same rows as one-call classify, which starts workers of its own for every call.
    before = len(_started(pids))
    expected, _ = classify_paths(files[:5], TINY_MODEL, options)
    assert len(_started(pids)) == before + 2
    _assert_same_rows([row.to_dict() for row in runs[0]], [row.to_dict() for row in expected])


def test_an_async_session_streams_rows_while_its_input_is_still_open(
    triton: TritonServer, dicom_folder: Path
) -> None:
    files = sorted(dicom_folder.glob("*.dcm"))[:3]

    async def stream() -> tuple[list[ResultRow], list[ResultRow]]:
        arrivals: asyncio.Queue[Path | None] = asyncio.Queue()

        async def arriving() -> AsyncIterator[Path]:
            while (path := await arrivals.get()) is not None:
                yield path

        options = ClassifyOptions(url=triton.grpc_url, workers=1)
        async with Session(TINY_MODEL, options) as session:
            rows = session.classify(arriving()).__aiter__()
            await arrivals.put(files[0])
            first = await anext(rows)  # answered before the input has ended
            for path in (*files[1:], None):
                await arrivals.put(path)
            rest = [row async for more in rows for row in more]
        return first, rest

    first, rest = asyncio.run(stream())
    assert [row.path for row in first] == [str(files[0])] and first[0].status == "ok"
    assert sorted(row.path for row in rest) == sorted(str(path) for path in files[1:])


# The arguments each verb needs besides the connection flags.
_VERBS = {
    "classify": ["x.dcm", "--model", "m"],
    "classify-series": ["x", "--model", "m"],
    "evaluate": ["x", "--model", "m", "--truth", "t.csv", "--out", "o"],
    "calibrate": ["x", "--model", "m", "--truth", "t.csv"],
    "explain": ["x.dcm", "--model", "m", "--output", "o.png"],
    "preprocess": ["x.dcm", "--model", "m", "--output", "o.npy"],
    "listen": ["--model", "m", "--output", "r.jsonl"],
    "bench": ["--model", "m"],  # an external server's: --url (none: bench starts its own)
    "loadtest": [],
}


def test_the_verbs_checked_are_every_verb_with_a_server_url() -> None:
    (commands,) = (
        action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    with_url = {
        verb
        for verb, parser in commands.choices.items()
        if any("--url" in action.option_strings for action in parser._actions)
    }
    assert with_url == set(_VERBS)


@pytest.mark.parametrize("verb", sorted(_VERBS))
def test_every_verb_that_calls_a_server_takes_the_same_connection_flags(verb: str, tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    flags = [
        "--url", "10.0.0.1:8001,10.0.0.2:8001", "--tls-ca", str(ca), "--tls-cert", str(cert),
        "--tls-key", str(key), "--admin-key", "k3y", "--request-timeout", "7", "--retry-give-up-after", "9",
        "--ready-timeout", "3",
    ]  # fmt: skip
    assert set(CONNECTION_FLAGS) == {flag for flag in flags if flag.startswith("--")}
    args = build_parser().parse_args([verb, *_VERBS[verb], *flags])
    connection = connection_of(args)
    assert connection.urls == ("10.0.0.1:8001", "10.0.0.2:8001")
    assert connection.tls == ClientTls(ca, cert, key) and connection.admin_key == "k3y"
    assert connection.retry == RetryPolicy(request_timeout_seconds=7.0, give_up_after_seconds=9.0)
    assert connection.ready_timeout_seconds == 3.0
    assert connection == ConnectionOptions(
        connection.url, ClientTls(ca, cert, key), "k3y", connection.retry, 3.0
    )


def test_the_listeners_dicom_tls_flags_are_its_own(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / name for name in ("dicom.pem", "dicom.key", "callers.pem"))
    dicom_tls = ["--dicom-tls-cert", str(cert), "--dicom-tls-key", str(key), "--dicom-tls-ca", str(ca)]
    args = build_parser().parse_args(["listen", *_VERBS["listen"], *dicom_tls])
    assert (args.dicom_tls_cert, args.dicom_tls_key, args.dicom_tls_ca) == (cert, key, ca)
    assert connection_of(args).tls is None  # Triton's stays plaintext: --tls-* were not given
