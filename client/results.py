"""Result rows, and the files they are written to.

One row per radiograph (a prediction), per failed input (an error and its reason) or per instance
outside the model's input contract (``not_accepted`` and the attribute refused).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from radserve.client.ownership import restrict, sync_folder
from radserve.errors import ConfigurationError
from radserve.reasons import is_transient
from radserve.settings import SETTINGS

Status = Literal["ok", "error", "not_accepted"]


@dataclass(frozen=True)
class ResultRow:
    """What happened to one input; keyed by (path, SOPInstanceUID, frame).

    The fields are the keys of a JSONL row and the columns of a CSV row (docs/reference/result-rows.md).

    Attributes:
        path: The input file, as given (or its pseudonym under ``--pseudonymize-paths``).
        status: ``ok`` (a prediction), ``error`` (see ``error_reason``) or ``not_accepted`` (outside the
            model's input contract).
        sop_instance_uid: The instance's SOPInstanceUID; empty when the file could not be read.
        frame: The frame number of a multi-frame file (from 1); None for single-frame files.
        model: The model that answered.
        model_version: Its version, read from the served config and checked on each answer.
        label: The most probable label; empty unless ``ok``.
        score: The probability of ``label``.
        probabilities: Every label's probability (after the card's temperature).
        latency_ms: The time of the inference request that carried this radiograph, in ms.
        error_reason: Why the row is not ``ok``: an ``error`` reason code, or for ``not_accepted`` the
            attribute refused (``modality``, ``sop_class``, ``photometric``, ``body_part``,
            ``view_position``, ``for_processing``, ``image_type``, ``presentation_lut_shape``, ...).
        error: A human-readable message naming the file and the reason, never a patient attribute.
        ood: True when ``score`` is below the card's out-of-distribution threshold; None when the card
            has none.
        accept_any: True when classified with ``--accept-any``: the input contract was not checked.
        rendering_note: Where the model card's rendering policy overruled the header (e.g. a
            contradicting Presentation LUT Shape); empty when the header was followed as written
            (docs/design.md, "Display pipeline").
        image_laterality: Image Laterality (0020,0062), else Laterality, of the source: R, L, U, B;
            empty when absent.
        burned_in_annotation: Burned In Annotation (0028,0301) of the source: YES, NO; empty when absent.
        lossy_image_compression: Lossy Image Compression (0028,2110) of the source: 00, 01; empty when
            absent.
        decision: Under the card's operating points, the label decided, or ``negative``; empty when the
            card has none.
        threshold: The operating threshold behind ``decision``.
        study_instance_uid: Set on rows of study-level systems (MRI series): one row per study.
        boxes: Detections on the source image: ``x0``, ``y0``, ``x1``, ``y1`` (pixel edges), ``score``,
            ``label`` (radserve.client.box_mapping).
        router: The router that routed this input (radserve export-router); empty without one.
        router_version: The router's version.
        routed: False when the first-stage label has no route; None without a router. ``model``,
            ``label``, ... are then the downstream model's, or the first stage's when unrouted.
        first_stage_model: The router's first-stage model.
        first_stage_version: Its version.
        first_stage_label: The label the first stage chose.
        first_stage_score: Its probability.
        first_stage_probabilities: Every first-stage label's probability.
    """

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
    ood: bool | None = None
    accept_any: bool = False
    rendering_note: str = ""
    image_laterality: str = ""
    burned_in_annotation: str = ""
    lossy_image_compression: str = ""
    decision: str = ""
    threshold: float | None = None
    study_instance_uid: str = ""
    boxes: list[dict[str, Any]] = field(default_factory=list)
    router: str = ""
    router_version: str = ""
    routed: bool | None = None
    first_stage_model: str = ""
    first_stage_version: str = ""
    first_stage_label: str = ""
    first_stage_score: float | None = None
    first_stage_probabilities: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int | None]:
        """The row's identity in a run: (path, SOPInstanceUID, frame)."""
        return (self.path, self.sop_instance_uid, self.frame)

    def to_dict(self) -> dict[str, Any]:
        """The row as the JSONL object (every field, by name)."""
        return asdict(self)


_CSV_FIELDS = tuple(ResultRow.__dataclass_fields__)


class ResultWriter:
    """Writes rows to ``.jsonl`` or ``.csv`` as they arrive.

    Rows name patients' files and findings: the file is 0600 (0640 with ``SETTINGS.listen.file_group``)
    whatever the umask. Each write is flushed, so a killed run keeps its rows, and fsync'ed every
    ``fsync_rows`` rows or ``fsync_seconds`` (and on close), so a host crash keeps them. In CSV,
    ``probabilities`` and ``first_stage_probabilities`` are JSON objects in one column (labels differ
    between models), and ``boxes`` a JSON list.

    Args:
        path: The results file; its suffix (``.jsonl`` or ``.csv``) chooses the format.
        append: Add to an existing file (``--resume``) instead of replacing it.
        fsync_rows: Rows written between two fsyncs, at most.
        fsync_seconds: Seconds between two fsyncs, at most.

    Raises:
        ValueError: The suffix is neither ``.jsonl`` nor ``.csv``.
    """

    def __init__(
        self,
        path: Path,
        *,
        append: bool = False,
        fsync_rows: int = SETTINGS.client.results_fsync_rows,
        fsync_seconds: float = SETTINGS.client.results_fsync_seconds,
    ) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise ConfigurationError(f"{path}: output must end in .jsonl or .csv")
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            descriptor = os.open(path, flags, 0o600)
        except OSError as error:
            raise ConfigurationError(f"{path}: cannot write results ({error.strerror or error})") from error
        self._stream: IO[str] = open(descriptor, "a" if append else "w", newline="", encoding="utf-8")  # noqa: SIM115
        restrict(path)
        self._csv: csv.DictWriter[str] | None = None
        self._fsync_rows, self._fsync_seconds = fsync_rows, fsync_seconds
        self._unsynced, self._synced_at = 0, time.monotonic()
        if suffix == ".csv":
            self._csv = csv.DictWriter(self._stream, fieldnames=_CSV_FIELDS)
            if self._stream.tell() == 0:
                self._csv.writeheader()

    def write(self, rows: list[ResultRow]) -> None:
        """Write the rows of one input in a single write, then flush.

        Args:
            rows: The rows of one input file.
        """
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
                        "first_stage_probabilities": json.dumps(
                            row.first_stage_probabilities, sort_keys=True
                        ),
                        "boxes": json.dumps(row.boxes, sort_keys=True),
                    }
                )
        self._stream.write(buffer.getvalue())
        self._stream.flush()
        self._unsynced += len(rows)
        if self._unsynced >= self._fsync_rows or time.monotonic() - self._synced_at >= self._fsync_seconds:
            self._sync()

    def _sync(self) -> None:
        os.fsync(self._stream.fileno())
        self._unsynced, self._synced_at = 0, time.monotonic()

    def close(self) -> None:
        """Flush, fsync and close the file (also on leaving a ``with`` block)."""
        if not self._stream.closed:
            self._stream.flush()
            self._sync()
        self._stream.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def resolved(path: str | Path) -> str:
    """The key ``--resume`` matches inputs on.

    Args:
        path: An input path.

    Returns:
        The absolute path, symbolic links resolved.
    """
    return str(Path(path).resolve())


def completed_paths(path: Path, key: Callable[[str], str] = resolved) -> set[str]:
    """Inputs that are done in a results file, for ``--resume``.

    An input is done when none of its rows ended in a transient error (:func:`radserve.reasons.is_transient`).
    The file is rewritten (atomically) without the rows of inputs that are not done, so that their
    new rows replace them; a run killed while writing leaves at most a torn last line, which goes too.
    Rows of one input are written together, so an input is all in or out.

    Args:
        path: The results file (``.jsonl`` or ``.csv``); none yet: nothing is done.
        key: What an input is known by: its resolved path, or the row path itself for pseudonymized
            rows.

    Returns:
        ``key`` of the row paths of the inputs that are done.
    """
    if not path.exists():
        return set()
    data = path.read_bytes()
    text = data[: data.rfind(b"\n") + 1].decode("utf-8")
    is_csv = path.suffix.lower() == ".csv"
    rows = (
        list(csv.DictReader(io.StringIO(text))) if is_csv else [json.loads(x) for x in text.splitlines() if x]
    )
    retry = {row["path"] for row in rows if is_transient(row.get("error_reason") or "")}
    kept = [row for row in rows if row["path"] not in retry]
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as out:
        if is_csv:
            writer = csv.DictWriter(out, fieldnames=_CSV_FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        else:
            out.writelines(json.dumps(row, sort_keys=True) + "\n" for row in kept)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, path)
    restrict(path)
    sync_folder(path.parent)
    return {key(row["path"]) for row in kept}
