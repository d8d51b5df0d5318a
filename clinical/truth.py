"""Ground truth for an evaluation: a CSV keyed by ``sop_instance_uid`` or ``path`` (radiographs) or
``study_instance_uid`` (the rows of a study-level system, MRI), with a label column.

The synthetic ``manifest.csv`` (columns path, region, sop_instance_uid, ...) works as it is: without
``--label-column`` the column ``label`` is used, else ``region``. An optional ``box`` column gives the
true boxes of a radiograph for the detector's mAP: ``x0 y0 x1 y1`` in source pixels, first and last
pixel included (as the synthetic manifest writes them), several separated by ``;``, empty for none.
The synthetic MRI ``manifest.csv`` (study_instance_uid, label, ...) works as it is too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from radserve.client.results import ResultRow
from radserve.errors import ClinicalError

LABEL_COLUMNS = ("label", "region")
KEY_COLUMNS = ("sop_instance_uid", "path", "study_instance_uid")
BOX_COLUMN = "box"
TruthBox = tuple[float, float, float, float]  # pixel edges x0 y0 x1 y1, as result rows give boxes


@dataclass(frozen=True)
class Truth:
    """Labels by SOPInstanceUID and by resolved path (a row may give either or both), and by
    StudyInstanceUID for study rows."""

    source: Path
    column: str
    by_uid: dict[str, str]
    by_path: dict[str, str]
    # true boxes by the same keys; None without a box column
    boxes_by_uid: dict[str, list[TruthBox]] | None = None
    boxes_by_path: dict[str, list[TruthBox]] | None = None
    by_study: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return max(len(self.by_uid), len(self.by_path), len(self.by_study))

    def label_of(self, row: ResultRow) -> str | None:
        """The true label of a result row; ``None`` when the truth file has no entry for it."""
        if row.study_instance_uid and not row.sop_instance_uid:  # a study-level row (MRI)
            return self.by_study.get(row.study_instance_uid)
        if row.sop_instance_uid and row.sop_instance_uid in self.by_uid:
            return self.by_uid[row.sop_instance_uid]
        return self.by_path.get(_resolved(row.path))

    def boxes_of(self, row: ResultRow) -> list[TruthBox] | None:
        """The true boxes of a result row; ``None`` without a box column or an entry for it."""
        if self.boxes_by_uid is None or self.boxes_by_path is None:
            return None
        if row.sop_instance_uid and row.sop_instance_uid in self.boxes_by_uid:
            return self.boxes_by_uid[row.sop_instance_uid]
        return self.boxes_by_path.get(_resolved(row.path))


def parse_boxes(text: str, where: str) -> list[TruthBox]:
    """Boxes of a ``box`` cell (inclusive pixels) as pixel edges; :class:`ClinicalError` when malformed."""
    boxes = []
    for part in filter(None, (chunk.strip() for chunk in text.split(";"))):
        try:
            x0, y0, x1, y1 = (float(value) for value in part.split())
        except ValueError:
            raise ClinicalError(f"{where}: box {part!r} is not four numbers x0 y0 x1 y1") from None
        if x1 < x0 or y1 < y0:
            raise ClinicalError(f"{where}: box {part!r} has x1 < x0 or y1 < y0")
        boxes.append((x0, y0, x1 + 1.0, y1 + 1.0))
    return boxes


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
        raise ClinicalError(
            f"truth file {path} has none of the key columns {', '.join(KEY_COLUMNS)} (columns: {columns})"
        )
    if not records:
        raise ClinicalError(f"truth file {path} has no rows")
    by_uid: dict[str, str] = {}
    by_path: dict[str, str] = {}
    by_study: dict[str, str] = {}
    boxed = BOX_COLUMN in columns
    boxes_by_uid: dict[str, list[TruthBox]] = {}
    boxes_by_path: dict[str, list[TruthBox]] = {}
    for line, record in enumerate(records, start=2):
        label = (record.get(column) or "").strip()
        boxes = parse_boxes(record.get(BOX_COLUMN) or "", f"truth file {path} line {line}") if boxed else []
        if uid := (record.get("sop_instance_uid") or "").strip():
            by_uid[uid], boxes_by_uid[uid] = label, boxes
        if study := (record.get("study_instance_uid") or "").strip():
            by_study[study] = label
        if relative := (record.get("path") or "").strip():  # relative to the truth file's folder
            key = _resolved(str(path.parent / relative))
            by_path[key], boxes_by_path[key] = label, boxes
    if not boxed:
        return Truth(path, column, by_uid, by_path, by_study=by_study)
    return Truth(path, column, by_uid, by_path, boxes_by_uid, boxes_by_path, by_study)
