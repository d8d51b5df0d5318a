"""Result rows: one per radiograph (a prediction) or per failed input (an error and its reason)."""

from __future__ import annotations

import csv
import io
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
    model_version: str = ""
    label: str = ""
    score: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    error_reason: str = ""
    error: str = ""
    study_instance_uid: str = ""  # rows of study-level systems (MRI series): one row per study
    # detections on the source image: x0, y0, x1, y1 (pixel edges), score, label (radserve.client.boxes)
    boxes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int | None]:
        return (self.path, self.sop_instance_uid, self.frame)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CSV_FIELDS = tuple(ResultRow.__dataclass_fields__)


class ResultWriter:
    """Writes rows to ``.jsonl`` or ``.csv`` as they arrive, flushed so a killed run keeps them.

    In CSV, ``probabilities`` is a JSON object in one column (labels differ between models), and
    ``boxes`` a JSON list.
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

    def write(self, rows: list[ResultRow]) -> None:
        """Write the rows of one input in a single write, then flush."""
        buffer = io.StringIO()
        if self._csv is None:
            buffer.writelines(json.dumps(row.to_dict(), sort_keys=True) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS)
            for row in rows:
                writer.writerow(
                    row.to_dict()
                    | {
                        "probabilities": json.dumps(row.probabilities, sort_keys=True),
                        "boxes": json.dumps(row.boxes, sort_keys=True),
                    }
                )
        self._stream.write(buffer.getvalue())
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def completed_paths(path: Path) -> set[str]:
    """Inputs that already have rows in a results file, for ``--resume``.

    A run killed while writing leaves at most a torn last line: it is cut off here, and that
    input is done again. Rows of one input are written together, so an input is all in or out.
    """
    if not path.exists():
        return set()
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with path.open("r+b") as stream:
            stream.truncate(complete)
    lines = data[:complete].decode("utf-8").splitlines()
    if path.suffix.lower() == ".csv":
        return {row["path"] for row in csv.DictReader(lines)}
    return {json.loads(line)["path"] for line in lines if line.strip()}
