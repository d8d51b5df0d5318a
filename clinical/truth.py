"""Ground truth for an evaluation: a CSV keyed by ``sop_instance_uid`` or ``path``, with a label column.

The synthetic ``manifest.csv`` (columns path, region, sop_instance_uid, ...) works as it is: without
``--label-column`` the column ``label`` is used, else ``region``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from radserve.client.results import ResultRow
from radserve.errors import ClinicalError

LABEL_COLUMNS = ("label", "region")
KEY_COLUMNS = ("sop_instance_uid", "path")


@dataclass(frozen=True)
class Truth:
    """Labels by SOPInstanceUID and by resolved path (a row may give either or both)."""

    source: Path
    column: str
    by_uid: dict[str, str]
    by_path: dict[str, str]

    def __len__(self) -> int:
        return max(len(self.by_uid), len(self.by_path))

    def label_of(self, row: ResultRow) -> str | None:
        """The true label of a result row; ``None`` when the truth file has no entry for it."""
        if row.sop_instance_uid and row.sop_instance_uid in self.by_uid:
            return self.by_uid[row.sop_instance_uid]
        return self.by_path.get(_resolved(row.path))


def _resolved(path: str) -> str:
    return str(Path(path).resolve())


def read_truth(path: Path, label_column: str | None = None) -> Truth:
    """Read a truth CSV; :class:`ClinicalError` (one line) when it is missing, empty or unusable."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            columns = reader.fieldnames or []
            records = list(reader)
    except OSError as error:
        raise ClinicalError(f"truth file {path}: {error.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise ClinicalError(f"truth file {path} is not a readable CSV: {error}") from None
    column = label_column or next((name for name in LABEL_COLUMNS if name in columns), None)
    if column is None or column not in columns:
        wanted = column or " or ".join(LABEL_COLUMNS)
        raise ClinicalError(f"truth file {path} has no label column {wanted} (columns: {columns})")
    if not any(key in columns for key in KEY_COLUMNS):
        raise ClinicalError(f"truth file {path} has neither a sop_instance_uid nor a path column")
    if not records:
        raise ClinicalError(f"truth file {path} has no rows")
    by_uid: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for record in records:
        label = (record.get(column) or "").strip()
        if record.get("sop_instance_uid"):
            by_uid[record["sop_instance_uid"].strip()] = label
        if record.get("path"):  # a relative path is relative to the truth file's folder
            by_path[_resolved(str(path.parent / record["path"].strip()))] = label
    return Truth(path, column, by_uid, by_path)
