"""The listener: DICOM C-STORE in, the classify runner over the spool, result rows out.

Received instances are spooled (fsync) before the sender hears success, counted against a bounded
queue (full: 0xA700), and classified in rounds on one :class:`~radserve.client.sync_client.SyncSession`
held for the listener's lifetime (a round that fails as a whole closes it; the next opens a fresh one):
a round starts as soon as an instance is queued and takes instances while the queue is not empty.
Rows go to one results file (through ``ListenOptions.pseudonyms``); an instance's spool file is removed
once its rows (and SRs) are fsync'ed; SRs are forwarded by a thread of their own. A restart drains the
spool; an instance already in the results is acknowledged again without a second row. With
``studies`` (a study-level model), instances are grouped by study instead (:mod:`.studies`).

Acknowledged means classified (docs/how-to/listen.md, "Durability"): an instance whose row is
transient (:func:`~radserve.reasons.is_transient`) stays spooled, out of the results, and is tried
again with doubling backoff; an exception while handling one instance is retried the same way, and
after ``SETTINGS.listen.max_failures`` the instance moves to the spool's quarantine folder with an
``internal_error`` row. The results file and the spool are owned by one process
(:class:`~radserve.client.ownership.OwnerLock`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from radserve.client.listen.audit import AuditLog
from radserve.client.listen.backlog import Backlog
from radserve.client.listen.forward import ReportForwarder
from radserve.client.listen.listen_metrics import ListenerMetrics
from radserve.client.listen.listen_options import ListenOptions
from radserve.client.listen.scp import (
    OUT_OF_RESOURCES,
    SPOOL_FAILED,
    SUCCESS,
    start_scp,
    storage_classes,
)
from radserve.client.listen.spool import Spool
from radserve.client.listen.studies import StudyGroups, StudyHost, StudyRounds
from radserve.client.ownership import OwnerLock
from radserve.client.results import ResultRow, ResultWriter, completed_paths, resolved
from radserve.client.sync_client import SyncSession
from radserve.errors import ConfigurationError, ModelCardError, RadserveError
from radserve.reasons import Reason, is_transient

__all__ = ["ListenOptions", "Listener"]

LOGGER = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 0.2  # how often an idle listener looks at its stop flag
_FORWARD_INTERVAL_SECONDS = 2.0  # how often SR documents waiting in sr_dir are forwarded


class Listener:
    """Receive, spool, classify; :meth:`run` until :meth:`stop`."""

    def __init__(self, options: ListenOptions, metrics: ListenerMetrics | None = None) -> None:
        if options.report_destination is not None and options.classify.sr_dir is None:
            raise ConfigurationError("a report destination needs an SR folder (ClassifyOptions.sr_dir)")
        if options.studies and options.classify.sr_dir is not None:
            raise ConfigurationError("SR documents are written per radiograph: a study listener writes none")
        self.options = options
        self.metrics = metrics or ListenerMetrics()
        # Both owned before either is read: a second listener (or classify --resume) refuses here.
        self._output_lock = OwnerLock(options.output)
        try:
            self.spool = Spool(options.spool)
        except BaseException:
            self._output_lock.release()
            raise
        done = completed_paths(options.output, key=resolved if options.pseudonyms.paths is None else str)
        self.backlog = Backlog(  # done keys are row paths: pseudonyms under --pseudonymize-paths
            done, self.spool.digests(), self.spool.conflict_names(), alias=options.pseudonyms.path
        )
        self._queue: queue.Queue[Path] = queue.Queue()
        self._studies = StudyRounds(
            StudyGroups(options.study_quiet_seconds), self.spool, self.metrics,
            options.retry_initial_seconds, options.retry_max_seconds, options.max_failures,
        ) if options.studies else None  # fmt: skip
        # Instances to quarantine with one row each: (file, row path, UID, reason, why).
        self._aside: queue.Queue[tuple[Path, str, str, Reason, str]] = queue.Queue()
        self.metrics.backlog_oldest.set_function(self.backlog.oldest_seconds)
        self.audit = AuditLog(options.audit_log)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._session: SyncSession | None = None
        self.port = 0

    # -- the DICOM side (association threads) -------------------------------------------------
    def offer(self, sop_instance_uid: str, data: bytes, digest: str) -> int:
        """Spool one received instance; the C-STORE status to answer.

        An instance is known by its SOP Instance UID and the SHA-256 of its data set: the same
        again is a duplicate (success, no second row); other content under a known UID is kept
        apart and gets a ``uid_conflict`` row, so it can neither shadow nor replace the first.
        """
        path = self.spool.path_for(sop_instance_uid)
        key = str(path)
        admission = self.backlog.admit(
            key, len(data), digest, self.options.max_queue, self.options.spool_max_bytes
        )
        if admission == "conflict":
            return self._offer_conflict(path, data, digest)
        if admission != "received":
            self.metrics.instances.labels(admission).inc()
            return SUCCESS if admission == "duplicate" else OUT_OF_RESOURCES
        try:
            self.spool.record_digest(path.name, digest)
            self.spool.write(path, data)
        except OSError as error:
            LOGGER.error("cannot spool %s: %s", path, error)
            self.backlog.withdraw(key)
            self.metrics.instances.labels("spool_failed").inc()
            return SPOOL_FAILED
        self.metrics.instances.labels("received").inc()
        self._enqueue(path)
        return SUCCESS

    def _offer_conflict(self, path: Path, data: bytes, digest: str) -> int:
        """Keep an instance whose UID is known with other content for a ``uid_conflict`` row."""
        conflict = self.spool.conflict_path(path, digest)
        if not self.backlog.first_conflict(conflict.name):  # the same conflicting instance again
            self.metrics.instances.labels("duplicate").inc()
            return SUCCESS
        try:
            self.spool.write(conflict, data)
        except OSError as error:
            LOGGER.error("cannot spool %s: %s", conflict, error)
            self.backlog.forget_conflict(conflict.name)
            self.metrics.instances.labels("spool_failed").inc()
            return SPOOL_FAILED
        self.metrics.instances.labels("uid_conflict").inc()
        self._set_conflict_aside(conflict)
        return SUCCESS

    def _set_conflict_aside(self, conflict: Path) -> None:
        uid = conflict.stem.rsplit(".", 1)[0]
        why = f"SOP Instance UID {uid} was received before with other content"
        target = self.spool.quarantine_folder / conflict.name
        self._aside.put((conflict, str(target), uid, Reason.UID_CONFLICT, why))

    def _enqueue(self, path: Path) -> None:
        (self._queue.put if self._studies is None else self._studies.groups.add)(path)
        self.metrics.queue_depth.set(self.backlog.depth)

    # -- the classifying side (the thread that calls run) --------------------------------------
    def run(self) -> None:
        """Drain the spool, listen, and classify until :meth:`stop`; what is left stays spooled."""
        for path in self.spool.pending(self.backlog.is_done):
            self.backlog.add_spooled(path)
            crashes = self.spool.attempts(path)
            if crashes >= self.options.max_failures:  # the listener died with it that many times
                why = f"the listener ended {crashes} times while classifying it"
                self._aside.put((path, str(path), path.stem, Reason.QUARANTINED, why))
            else:
                self._enqueue(path)
        for conflict in self.spool.conflicts():
            self._set_conflict_aside(conflict)
        if self.backlog.depth:
            LOGGER.info("draining %d instance(s) left in the spool", self.backlog.depth)
        options = self.options
        try:
            server = start_scp(
                (options.host, options.port), options.ae_title, self.offer, self.metrics,
                allowed_calling=options.allowed_calling, limits=options.limits, audit=self.audit,
                ssl_context=options.ssl_context, storage_classes=storage_classes(options.studies),
            )  # fmt: skip
        except OSError as error:
            raise ConfigurationError(f"cannot listen on {options.host}:{options.port}: {error}") from None
        self.port = int(server.server_address[1])
        self._ready.set()
        forwarder = threading.Thread(target=self._forward_reports, name="radserve-sr-forward", daemon=True)
        forwarder.start()
        try:
            with ResultWriter(options.output, append=True) as writer:
                durable = os.open(options.output, os.O_RDONLY)  # fsync of the writer's file
                try:
                    while not self._stop.is_set():
                        self._release_due()
                        self._settle_aside(writer, durable)
                        self._next_round(writer, durable)
                finally:
                    os.close(durable)
                    self._close_session()
        finally:
            server.shutdown()
            self._stop.set()
            forwarder.join()
            self.spool.close()
            self._output_lock.release()
            self.audit.close()

    def _open_session(self) -> SyncSession:
        """The listener's one session (decode workers, channels, card), opened on first use."""
        if self._session is None:
            paths, options = self.options.pseudonyms.paths, self.options.classify
            hide = options.hide_paths or (paths.hide if paths is not None else None)  # workers' stderr
            session = SyncSession(self.options.model, replace(options, metrics=self.metrics, hide_paths=hide))
            self._session = session.__enter__()
        return self._session

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(None, None, None)

    def _next_round(self, writer: ResultWriter, durable: int) -> None:
        """The studies that are quiet (study mode), else the queued instances; waits a little when idle."""
        if self._studies is not None:
            self._studies.run_due(StudyHost(
                lambda paths: self._open_session().classify_studies(paths),
                lambda rows: self._write(writer, durable, rows),
                lambda key: self._finish(key, removed=True),
                lambda path, why: self._set_aside_failed(path, why, writer, durable),
                self._close_session,
            ))  # fmt: skip
            self._stop.wait(_IDLE_POLL_SECONDS)
            return
        try:
            first = self._queue.get(timeout=_IDLE_POLL_SECONDS)
        except queue.Empty:
            return
        self._round(writer, durable, first)

    def _round(self, writer: ResultWriter, durable: int, first: Path) -> None:
        """Classify ``first`` and whatever arrives until the queue is empty, on the one session."""
        taken: list[Path] = []
        try:
            run = self._open_session().classify(self._take(taken, first))
            try:
                for rows in run:
                    self._handle(writer, durable, rows)
            finally:
                run.close()
        except ModelCardError as error:  # a study model without --studies: the listener cannot go on
            raise ConfigurationError(f"{error}, or radserve listen --studies") from None
        except RadserveError as error:  # e.g. the server is unreachable: keep the spool, try again
            LOGGER.error("classification round failed (instances stay spooled): %s", error)
            self._close_session()  # the next round starts a fresh one
            self._stop.wait(self.options.classify.ready_timeout_seconds / 10)
        except Exception as error:  # raised while handling an instance (e.g. writing its SR)
            self._blame(taken, error, writer, durable)
        finally:
            for path in self.backlog.unsettled(taken):
                self.spool.end_attempt(path)
                self._queue.put(path)

    # -- what happens to one instance ----------------------------------------------------------
    def _handle(self, writer: ResultWriter, durable: int, rows: list[ResultRow]) -> None:
        """The rows of one instance: kept if final, or the instance tried again later; never raises."""
        key = rows[0].path
        try:
            transient = next((row for row in rows if is_transient(row.error_reason)), None)
            if transient is not None:
                self._retry_later(key, f"{transient.error_reason}: {transient.error}")
                return
            self._write(writer, durable, rows)
            self._finish(key, removed=True)
            failed = any(row.status != "ok" for row in rows)
            self.metrics.classified.labels("failed" if failed else "ok").inc()
        except Exception as error:  # the instance fails, the listener goes on
            self._failed(Path(key), error, writer, durable)

    def _write(self, writer: ResultWriter, durable: int, rows: list[ResultRow]) -> None:
        writer.write([self.options.pseudonyms.row(row) for row in rows])
        os.fsync(durable)  # the rows survive a power cut before their instance leaves the spool

    def _finish(self, key: str, *, removed: bool) -> None:
        """The instance has its final row: done, out of the backlog (its spool file removed)."""
        self.backlog.finish(key)
        self.metrics.queue_depth.set(self.backlog.depth)
        if removed:
            self.spool.remove(Path(key))

    def _retry_later(self, key: str, why: str, *, failures: int = 0) -> None:
        """Keep the instance spooled and queue it again after a doubling delay."""
        self.spool.end_attempt(Path(key))
        retry = self.backlog.schedule(key, self.options.retry_initial_seconds, self.options.retry_max_seconds)
        self.metrics.retries.labels("failure" if failures else "transient").inc()
        LOGGER.warning(
            "%s not classified (%s): kept in the spool, try %d in %.1f s; backlog %d instance(s), "
            "oldest %.0f s",
            key, why, retry.tries + 1, retry.delay, retry.backlog, retry.oldest_seconds,
        )  # fmt: skip

    def _failed(self, path: Path, error: Exception, writer: ResultWriter, durable: int) -> None:
        """An exception while handling ``path``: try again, or after ``max_failures`` quarantine it."""
        key = str(path)
        failures = self.backlog.fail(key)
        self.metrics.failures.inc()
        LOGGER.error(
            "handling %s failed (%d of %d)", key, failures, self.options.max_failures, exc_info=error
        )
        if failures < self.options.max_failures:
            self._retry_later(key, f"{type(error).__name__}: {error}", failures=failures)
            return
        why = f"failed {failures} times ({type(error).__name__}: {error})"
        if not self._set_aside_failed(path, why, writer, durable):
            self._retry_later(key, "quarantine failed", failures=failures)  # the disk may be full

    def _set_aside_failed(self, path: Path, why: str, writer: ResultWriter, durable: int) -> bool:
        return self._set_aside(path, str(path), path.stem, Reason.INTERNAL_ERROR, why, writer, durable)

    def _set_aside(
        self, path: Path, row_path: str, uid: str, reason: Reason, why: str,
        writer: ResultWriter, durable: int,
    ) -> bool:  # fmt: skip
        """Move ``path`` to the quarantine folder with one ``reason`` row; False (logged) if that failed."""
        target = self.spool.quarantine_folder / path.name
        try:
            if not self.backlog.is_done(row_path):  # the row was not written before a crash
                row = ResultRow(
                    path=row_path,
                    status="error",
                    sop_instance_uid=uid,
                    model=self.options.model,
                    error_reason=reason,
                    error=f"{why}; kept as {target}",
                )
                self._write(writer, durable, [row])
            self.spool.quarantine(path)
        except Exception:
            LOGGER.exception("cannot quarantine %s", path)
            return False
        self._finish(row_path, removed=False)
        self.metrics.quarantined.inc()
        LOGGER.error("%s: %s; kept as %s", uid, why, target)
        return True

    def _settle_aside(self, writer: ResultWriter, durable: int) -> None:
        """Quarantine, each with its row, the instances found in conflict or crash-looping."""
        while True:
            try:
                path, row_path, uid, reason, why = self._aside.get_nowait()
            except queue.Empty:
                return
            if not self._set_aside(path, row_path, uid, reason, why, writer, durable):
                self._aside.put((path, row_path, uid, reason, why))  # on the next pass
                return

    def _blame(self, taken: list[Path], error: Exception, writer: ResultWriter, durable: int) -> None:
        """A round raised: the instance that caused it fails; several suspects go one per round."""
        open_ = self.backlog.unsettled(taken)
        if len(open_) == 1:
            self._failed(open_[0], error, writer, durable)
            return
        LOGGER.error(
            "classification round failed with %d instance(s) open; each goes alone to find the cause",
            len(open_), exc_info=error,
        )  # fmt: skip
        self.backlog.isolate(open_)
        if not open_:  # raised before any instance: do not spin
            self._stop.wait(self.options.retry_initial_seconds)

    def _release_due(self) -> None:
        """Queue the instances whose next try is due."""
        for key in self.backlog.due():
            self._queue.put(Path(key))

    def _take(self, taken: list[Path], first: Path) -> Iterator[Path]:
        """``first``, then queued instances until the queue is empty (read in the session's event loop:
        never blocks); an instance suspected of raising goes in a round of its own."""
        pending: Path | None = first
        while not self._stop.is_set():
            if pending is None:
                try:
                    pending = self._queue.get_nowait()
                except queue.Empty:
                    return
            path, pending = pending, None
            alone = self.backlog.is_alone(str(path))
            if alone and taken:
                self._queue.put(path)
                return
            taken.append(path)
            self.spool.begin_attempt(path)  # counts if the listener dies before the attempt ends
            yield path
            if alone:
                return

    def _forward_reports(self) -> None:
        """Every few seconds, and once more on stop: send the SRs due in ``sr_dir`` (own thread)."""
        options = self.options
        if options.report_destination is not None and options.classify.sr_dir is not None:
            ReportForwarder(
                options.classify.sr_dir, options.report_destination, options.ae_title, self.metrics,
                limits=options.limits, ssl_context=options.report_ssl_context, audit=self.audit,
            ).run_until(self._stop, _FORWARD_INTERVAL_SECONDS)  # fmt: skip

    def wait_ready(self, timeout: float) -> bool:
        """Whether the DICOM port is open within ``timeout`` seconds (then :attr:`port` is set)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Finish the instances in flight and return from :meth:`run`."""
        self._stop.set()
