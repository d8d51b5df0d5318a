"""The listener's study mode (``--studies``): MR instances grouped by study, one row per study.

A study-level model (the vertebral-fracture MRI system) needs a study's T1W and T2W series
together, and DICOM says nothing about when a sender has sent a whole study. Each spooled instance
joins the group of its Study Instance UID (read from its header when it is spooled, and again from
the spool file after a restart, so a restart re-groups what the spool holds); a group is classified
once no instance of it arrived for ``quiet_seconds``, through
:meth:`~radserve.client.session.Session.classify_studies`: the series rules of ``radserve
classify-series``, one row per study (its ``path`` the spool folder joined with the Study Instance
UID), plus a row per unreadable or refused instance. The instances stay spooled until the study's
rows are written; a transient row puts the whole study back, tried again after a doubling delay with
whatever arrived meanwhile. An instance that arrives after its study was classified starts a new
group (a late series makes a second row for the study: choose the quiet time longer than the
sender's pauses).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pydicom

from radserve.client.listen.listen_metrics import ListenerMetrics
from radserve.client.listen.spool import Spool
from radserve.client.results import ResultRow
from radserve.errors import ConfigurationError, ModelCardError, RadserveError
from radserve.reasons import is_transient

__all__ = ["Study", "StudyGroups", "StudyHost", "StudyRounds", "study_of", "study_rows"]

LOGGER = logging.getLogger(__name__)


@dataclass
class Study:
    """The spooled instances of one Study Instance UID, and when it may be classified."""

    uid: str
    paths: list[Path] = field(default_factory=list)
    last_arrival: float = 0.0  # time.monotonic() of the latest instance
    not_before: float = 0.0  # time.monotonic() of the next try after a transient row or a failure
    tries: int = 0
    failures: int = 0


class StudyGroups:
    """Studies waiting for their quiet time (association threads add, the classifying thread takes)."""

    def __init__(self, quiet_seconds: float) -> None:
        self.quiet_seconds = quiet_seconds
        self._lock = threading.Lock()
        self._waiting: dict[str, Study] = {}

    def add(self, path: Path) -> None:
        """A spooled instance joins its study's group (and restarts the study's quiet time)."""
        uid = study_of(path)
        with self._lock:
            study = self._waiting.setdefault(uid, Study(uid))
            if path not in study.paths:
                study.paths.append(path)
            study.last_arrival = time.monotonic()

    def due(self) -> list[Study]:
        """The studies quiet for long enough and not waiting for a retry, out of the groups."""
        now = time.monotonic()
        with self._lock:
            ready = [
                study
                for study in self._waiting.values()
                if now - study.last_arrival >= self.quiet_seconds and now >= study.not_before
            ]
            for study in ready:
                del self._waiting[study.uid]
            return ready

    def again(self, study: Study, delay: float) -> None:
        """Put ``study`` back, tried after ``delay`` seconds with the instances that arrived meanwhile."""
        with self._lock:
            later = self._waiting.pop(study.uid, None)
            if later is not None:
                study.paths += [path for path in later.paths if path not in study.paths]
                study.last_arrival = later.last_arrival
            study.not_before = time.monotonic() + delay
            self._waiting[study.uid] = study


def study_of(path: Path) -> str:
    """The Study Instance UID in a spooled instance's header; empty when it has none or is unreadable
    (those instances make one group, whose row says why)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    except Exception:  # the study's rows name what is wrong with the file
        return ""
    return str(header.get("StudyInstanceUID", ""))


def study_rows(study: Study, rows: list[ResultRow], folder: Path) -> tuple[list[ResultRow], ResultRow | None]:
    """The rows of ``study`` as written (the study's row keyed ``folder/<StudyInstanceUID>``), and the
    first transient row among them (then none is written and the study is tried again)."""
    transient = next((row for row in rows if is_transient(row.error_reason)), None)
    key = str(folder / (study.uid or "no-study-uid"))
    return [
        replace(row, path=key) if row.study_instance_uid and not row.sop_instance_uid else row for row in rows
    ], transient


@dataclass(frozen=True)
class StudyHost:
    """What a study round needs of the listener (its session, results file and spool)."""

    classify: Callable[[list[str]], list[ResultRow]]  # the session's classify_studies; may raise
    write: Callable[[list[ResultRow]], None]  # written and fsync'ed
    finish: Callable[[str], None]  # the instance has its final row: out of the backlog and the spool
    set_aside: Callable[[Path, str], bool]  # quarantined with an internal_error row; False if that failed
    lost_session: Callable[[], None]  # the next round opens a fresh session


@dataclass
class StudyRounds:
    """Classify the studies that are due, one round each; retry with doubling delays, quarantine after
    ``max_failures`` exceptions (as the listener does for instances)."""

    groups: StudyGroups
    spool: Spool
    metrics: ListenerMetrics
    retry_initial_seconds: float
    retry_max_seconds: float
    max_failures: int

    def run_due(self, host: StudyHost) -> None:
        for study in self.groups.due():
            self._round(host, study)

    def _round(self, host: StudyHost, study: Study) -> None:
        for path in study.paths:
            self.spool.begin_attempt(path)  # counts if the listener dies during the round
        try:
            rows, transient = study_rows(
                study, host.classify([str(path) for path in study.paths]), self.spool.folder
            )
            if transient is None:
                host.write(rows)
                for path in study.paths:
                    host.finish(str(path))
                self.metrics.classified.labels("ok" if rows[-1].status == "ok" else "failed").inc()
                return
            why = f"{transient.error_reason}: {transient.error}"
        except ModelCardError as error:  # a radiograph model behind --studies: the listener cannot go on
            for path in study.paths:
                self.spool.end_attempt(path)  # not the instances' fault: no crash counted against them
            raise ConfigurationError(f"{error} (radserve listen without --studies)") from None
        except RadserveError as error:  # e.g. the server is unreachable
            host.lost_session()
            why = str(error)
        except Exception as error:  # raised while writing the rows: counted, then quarantined
            study.failures += 1
            self.metrics.failures.inc()
            LOGGER.error("handling study %s failed (%d of %d)", study.uid, study.failures, self.max_failures,
                         exc_info=error)  # fmt: skip
            why = f"failed {study.failures} times ({type(error).__name__}: {error})"
            if study.failures >= self.max_failures:
                study.paths = [path for path in study.paths if not host.set_aside(path, why)]
                if not study.paths:
                    return
        self._again(study, why)

    def _again(self, study: Study, why: str) -> None:
        for path in study.paths:
            self.spool.end_attempt(path)
        study.tries += 1
        delay = min(self.retry_initial_seconds * 2 ** (study.tries - 1), self.retry_max_seconds)
        self.groups.again(study, delay)
        self.metrics.retries.labels("failure" if study.failures else "transient").inc()
        LOGGER.warning("study %s not classified (%s): its %d instance(s) stay spooled, try %d in %.1f s",
                       study.uid, why, len(study.paths), study.tries + 1, delay)  # fmt: skip
