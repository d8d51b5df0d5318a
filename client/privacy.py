"""``--pseudonymize-paths``: input paths replaced by a keyed hash in result rows and log lines.

File names often carry patient names or accession numbers. The pseudonym of a file is an HMAC of
its resolved path under a secret key kept by the site, so the same file always gets the same
pseudonym (``--resume`` still works) and only the key holder can link it back.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from radserve.client.results import ResultRow, resolved
from radserve.errors import InputError
from radserve.reasons import Reason
from radserve.transport import pseudonym

PREFIX = "path-"


class PathPseudonyms:
    """Pseudonyms of input paths under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise InputError("<key>", "weak_key", "the pseudonym key must hold at least 16 bytes")
        self._key = key
        self._known: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: Path) -> PathPseudonyms:
        try:
            return cls(path.read_bytes().strip())
        except OSError as error:
            raise InputError(
                str(path), Reason.UNREADABLE, f"cannot read the key ({error.strerror})"
            ) from None

    def __call__(self, path: str | Path) -> str:
        text = str(path)
        if text not in self._known:
            self._known[text] = PREFIX + pseudonym(resolved(text), self._key)
        return self._known[text]

    def row(self, row: ResultRow) -> ResultRow:
        alias = self(row.path)
        return replace(row, path=alias, error=row.error.replace(row.path, alias))

    def hide_in_logs(self, paths: list[Path]) -> None:
        """Rewrite log records of this process that name one of ``paths``."""
        for path in paths:
            self(path)
        hiding = _HidePaths(self._known)
        for handler in logging.getLogger().handlers:
            handler.addFilter(hiding)


class _HidePaths(logging.Filter):
    def __init__(self, known: dict[str, str]) -> None:
        super().__init__()
        self._known = known

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for path in sorted((p for p in self._known if p in message), key=len, reverse=True):
            message = message.replace(path, self._known[path])
        record.msg, record.args = message, None
        return True
