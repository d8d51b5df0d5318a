"""The classify runner as one call: a :class:`~radserve.client.session.Session` of one run.

Decode workers prepare files while earlier ones are on the wire; radiographs ready together share
a request. Every file yields either one row per radiograph (frame) or one error row; nothing is
skipped, and at most ``2 x max_in_flight`` files are under way at once. An application that
classifies again and again keeps a :class:`~radserve.client.session.Session` open instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from radserve.client.options import ClassifyOptions, RunSummary
from radserve.client.results import ResultRow
from radserve.client.session import Session

__all__ = ["ClassifyOptions", "RunSummary", "classify"]


async def classify(
    files: Iterable[Path],
    model: str,
    on_rows: Callable[[list[ResultRow]], None],
    options: ClassifyOptions | None = None,
) -> RunSummary:
    """Classify ``files`` with ``model`` (a classifier, or a router: :mod:`radserve.routing`).

    ``on_rows`` receives the rows of one file at a time (one per frame, or one error row) as soon
    as they are all known, so a writer can keep a file's rows together. Raises
    :class:`~radserve.errors.ServerError` when no server has the model ready and
    :class:`~radserve.errors.DecodeWorkersError` when the decode workers cannot start.
    """
    started = time.monotonic()
    async with Session(model, options) as session:
        run = session.classify(files)
        async for rows in run:
            on_rows(rows)
    run.summary.seconds = time.monotonic() - started  # the session's start included, as one call is
    return run.summary
