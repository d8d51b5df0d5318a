"""Result rows: one per radiograph (a prediction) or per failed input (an error and its reason)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Status = Literal["ok", "error"]


@dataclass(frozen=True)
class ResultRow:
    """What happened to one input; keyed by (path, SOPInstanceUID, frame)."""

    path: str
    status: Status
    sop_instance_uid: str = ""
    frame: int | None = None
    model: str = ""
    label: str = ""
    score: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    error_reason: str = ""
    error: str = ""

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.path, self.sop_instance_uid, self.frame)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CSV_FIELDS = tuple(ResultRow.__dataclass_fields__)


class ResultWriter:
    """Writes rows to ``.jsonl`` or ``.csv`` as they arrive, flushed so a killed run keeps them.

    In CSV, ``probabilities`` is a JSON object in one column (labels differ between models).
    """

    def __init__(self, path: Path, *, append: bool = False) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise ValueError(f"{path}: output must end in .jsonl or .csv")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream: IO[str] = path.open("a" if append else "w", newline="", encoding="utf-8")
        self._csv: csv.DictWriter[str] | None = None
        if suffix == ".csv":
            self._csv = csv.DictWriter(self._stream, fieldnames=_CSV_FIELDS)
            if self._stream.tell() == 0:
                self._csv.writeheader()

    def write(self, row: ResultRow) -> None:
        record = row.to_dict()
        if self._csv is None:
            self._stream.write(json.dumps(record, sort_keys=True) + "\n")
        else:
            self._csv.writerow(record | {"probabilities": json.dumps(row.probabilities, sort_keys=True)})
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
