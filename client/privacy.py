"""Pseudonyms of what names a patient's file outside its pixels: paths and UIDs, under a site's key.

``--pseudonymize-paths``: file names often carry patient names or accession numbers. The pseudonym
of a file is an HMAC of its resolved path under a secret key kept by the site, so the same file always
gets the same pseudonym (``--resume`` still works) and only the key holder can link it back. Paths are
hidden in rows, in log lines (tracebacks included), in what the process writes to stderr
(:meth:`PathPseudonyms.guard_stderr`) and in what decode workers write there
(``ClassifyOptions.hide_paths``); a folder given to :class:`PathPseudonyms` hides every path below it
(the listener's spool: its files are named by SOP Instance UID).

``--pseudonymize-uids``: Study and SOP Instance UIDs in rows, and UIDs quoted in their error text,
replaced as DICOM PS3.15 Annex E's action ``U`` asks: a non-zero-length UID, the same replacement for
the same UID wherever it appears. The replacement is a keyed hash in the UUID-derived root ``2.25``
(PS3.5 B.2), so it is stable across runs and hosts with one key; the mapping back (original,
replacement) is appended to a 0600 file beside the key, never to the rows. Well-known UIDs of the
standard (``1.2.840.10008.*``: SOP classes, transfer syntaxes) are kept.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from radserve.client.results import ResultRow, resolved
from radserve.errors import InputError
from radserve.reasons import Reason
from radserve.transport import pseudonym

__all__ = ["PathPseudonyms", "Pseudonyms", "UidPseudonyms", "read_key"]

PREFIX = "path-"
UID_ROOT = "2.25"
STANDARD_ROOT = "1.2.840.10008."
# A UID quoted in text: at least four components, none with a leading zero (PS3.5 9.1).
_UID_TOKEN = re.compile(r"(?<![\w.])(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*)){3,}(?![\w]|\.[0-9])")


def read_key(path: Path) -> bytes:
    """The secret in a key file.

    Args:
        path: The key file (at least 16 bytes, surrounding white space ignored).

    Returns:
        The key.

    Raises:
        InputError: The file cannot be read, or holds a key too short.
    """
    try:
        return _checked(path.read_bytes().strip(), str(path))
    except OSError as error:
        raise InputError(str(path), Reason.UNREADABLE, f"cannot read the key ({error.strerror})") from None


def _checked(key: bytes, where: str = "<key>") -> bytes:
    if len(key) < 16:
        raise InputError(where, "weak_key", "the pseudonym key must hold at least 16 bytes")
    return key


class PathPseudonyms:
    """Pseudonyms of input paths under one key; ``folders``: every path below them is hidden too."""

    def __init__(self, key: bytes, folders: Iterable[str | Path] = ()) -> None:
        self._key = _checked(key)
        self._known: dict[str, dict[str, str]] = {}  # folder as written -> {path: pseudonym}: few folders
        names = {str(Path(folder)) for folder in folders} | {
            str(Path(folder).resolve()) for folder in folders
        }
        alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        self._below = re.compile(rf"(?:{alternatives})(?:/[\w.+-]*)*") if names else None

    @classmethod
    def from_file(cls, path: Path, folders: Iterable[str | Path] = ()) -> PathPseudonyms:
        return cls(read_key(path), folders)

    def __call__(self, path: str | Path) -> str:
        return PREFIX + pseudonym(resolved(str(path)), self._key)

    def hide(self, text: str) -> str:
        """``text`` with every known path, and every path below the folders, replaced by its pseudonym."""
        for folder, known in list(self._known.items()):
            if folder in text:  # only the paths of folders the text names are looked for
                for path, alias in sorted(known.items(), key=lambda item: len(item[0]), reverse=True):
                    text = text.replace(path, alias)
        return self._below.sub(lambda found: self(found.group(0)), text) if self._below else text

    def row(self, row: ResultRow) -> ResultRow:
        alias = self(row.path)
        return replace(row, path=alias, error=self.hide(row.error.replace(row.path, alias)))

    def hide_in_logs(self, paths: list[Path]) -> None:
        """Rewrite log records of this process (tracebacks too) that name one of ``paths`` or a folder."""
        for path in paths:
            self._known.setdefault(os.path.dirname(str(path)), {})[str(path)] = self(path)
        hiding = _HidePaths(self.hide)
        for handler in logging.getLogger().handlers:
            handler.addFilter(hiding)

    def guard_stderr(self) -> None:
        """Hide paths in everything this process writes to ``sys.stderr`` from now on (log handlers on it
        included): tracebacks of threads and of the command line's error boundary go there."""
        previous = sys.stderr
        sys.stderr = _HidingStream(previous, self.hide)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is previous:
                handler.setStream(sys.stderr)


class _HidePaths(logging.Filter):
    def __init__(self, hide: Callable[[str], str]) -> None:
        super().__init__()
        self._hide = hide

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # the traceback's messages may name a file: formatted here, then hidden
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info = None
        record.exc_text = None
        record.msg, record.args = self._hide(message), None
        return True


class _HidingStream:
    """A text stream that passes what is written through ``hide`` (any other attribute: the stream's)."""

    def __init__(self, stream: TextIO, hide: Callable[[str], str]) -> None:
        self._stream, self._hide = stream, hide

    def write(self, text: str) -> int:
        self._stream.write(self._hide(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class UidPseudonyms:
    """PS3.15 Annex E's "replace UID" (``U``) in result rows, the mapping kept in ``mapping`` (0600).

    Args:
        key: The site's secret (the same key gives the same replacements everywhere).
        mapping: Where each (original, replacement) pair is appended once, as CSV.
    """

    def __init__(self, key: bytes, mapping: Path) -> None:
        self._key = _checked(key)
        self.mapping = mapping
        self._lock = threading.Lock()
        try:
            lines = mapping.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        self._recorded = {line.split(",", 1)[0] for line in lines[1:]}

    @classmethod
    def from_file(cls, path: Path) -> UidPseudonyms:
        """Under the key in ``path``, the mapping beside it (``KEYFILE.uid-map.csv``)."""
        return cls(read_key(path), path.with_name(f"{path.name}.uid-map.csv"))

    def __call__(self, uid: str) -> str:
        """The replacement of ``uid`` (recorded in the mapping); empty and standard UIDs unchanged."""
        if not uid or uid.startswith(STANDARD_ROOT):
            return uid
        value = int(pseudonym(uid, self._key, 32), 16)  # 128 bits, laid out as an RFC 9562 UUID:
        value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8 (custom)
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10
        replacement = f"{UID_ROOT}.{value}"
        self._record(uid, replacement)
        return replacement

    def _record(self, uid: str, replacement: str) -> None:
        with self._lock:
            if uid in self._recorded:
                return
            new = not self.mapping.exists()
            descriptor = os.open(self.mapping, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(
                    descriptor,
                    (("original,replacement\n" if new else "") + f"{uid},{replacement}\n").encode(),
                )
            finally:
                os.close(descriptor)
            self._recorded.add(uid)

    def hide(self, text: str) -> str:
        """``text`` with every UID it quotes replaced."""
        return _UID_TOKEN.sub(lambda found: self(found.group(0)), text)

    def row(self, row: ResultRow) -> ResultRow:
        return replace(
            row,
            sop_instance_uid=self(row.sop_instance_uid),
            study_instance_uid=self(row.study_instance_uid),
            error=self.hide(row.error),
        )


@dataclass(frozen=True)
class Pseudonyms:
    """What a run hides in its rows: paths, UIDs, both or neither."""

    paths: PathPseudonyms | None = None
    uids: UidPseudonyms | None = None

    def row(self, row: ResultRow) -> ResultRow:
        """``row`` as written: its path and UIDs replaced as asked."""
        if self.paths is not None:
            row = self.paths.row(row)
        return row if self.uids is None else self.uids.row(row)

    def path(self, path: str) -> str:
        """What a row's ``path`` becomes (the key of a done input in a results file)."""
        return path if self.paths is None else self.paths(path)
