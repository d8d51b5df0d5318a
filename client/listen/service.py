"""The listener: DICOM C-STORE in, the classify runner over the spool, result rows out.

Received instances are spooled (fsync) before the sender hears success, counted against a bounded
queue (full: 0xA700, the sender retries later), and classified in rounds on one
:class:`~radserve.client.sync_client.SyncSession` held for the listener's lifetime (its event loop
thread, decode workers, channels and card start once, not per arrival): a round starts as soon as an
instance is queued and takes instances for as long as the queue is not empty. A round that fails as a
whole (the server unreachable) closes the session; the next round opens a fresh one. Rows are the
runner's rows, written to one results file as they come; an instance's spool file is removed once
its rows are fsync'ed. SR documents (``classify.sr_dir``) are forwarded to the report destination
by a thread of their own. A restart drains what the spool still holds; an instance already in the
results is acknowledged again without a second row.
"""

from __future__ import annotations

import logging
import os
import queue
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from radserve.client.listen.forward import Destination, send_reports
from radserve.client.listen.metrics import ListenerMetrics
from radserve.client.listen.scp import OUT_OF_RESOURCES, SPOOL_FAILED, SUCCESS, start_scp
from radserve.client.listen.spool import Spool
from radserve.client.options import ClassifyOptions
from radserve.client.results import ResultRow, ResultWriter, completed_paths
from radserve.client.sync_client import SyncSession
from radserve.errors import ConfigurationError, RadserveError
from radserve.settings import SETTINGS

__all__ = ["ListenOptions", "Listener"]

LOGGER = logging.getLogger(__name__)

_IDLE_POLL_SECONDS = 0.2  # how often an idle listener looks at its stop flag
_FORWARD_INTERVAL_SECONDS = 2.0  # how often SR documents waiting in sr_dir are forwarded


@dataclass(frozen=True)
class ListenOptions:
    model: str
    output: Path  # results file, .jsonl or .csv (appended to)
    spool: Path = Path(SETTINGS.listen.spool)
    host: str = SETTINGS.host
    port: int = SETTINGS.listen.port  # 0 picks a free one (see Listener.port)
    ae_title: str = SETTINGS.listen.ae_title
    max_queue: int = SETTINGS.listen.max_queue
    allowed_calling: Sequence[str] = ()  # calling AE titles admitted; empty: any
    network_timeout: float = SETTINGS.listen.network_timeout_seconds
    ssl_context: ssl.SSLContext | None = None  # DICOM over TLS
    # How rows are made: the classify runner's options (url, in-flight, workers, sr_dir, ...).
    classify: ClassifyOptions = field(default_factory=ClassifyOptions)
    # Forward each SR to this Storage SCP (they are written to classify.sr_dir first).
    report_destination: Destination | None = None


class Listener:
    """Receive, spool, classify; :meth:`run` until :meth:`stop`."""

    def __init__(self, options: ListenOptions, metrics: ListenerMetrics | None = None) -> None:
        if options.report_destination is not None and options.classify.sr_dir is None:
            raise ConfigurationError("a report destination needs an SR folder (ClassifyOptions.sr_dir)")
        self.options = options
        self.metrics = metrics or ListenerMetrics()
        self.spool = Spool(options.spool)
        self._done = completed_paths(options.output)
        self._waiting: set[str] = set()
        self._queue: queue.Queue[Path] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._session: SyncSession | None = None
        self.port = 0

    # -- the DICOM side (association threads) -------------------------------------------------
    def offer(self, sop_instance_uid: str, data: bytes) -> int:
        """Spool one received instance; the C-STORE status to answer."""
        path = self.spool.path_for(sop_instance_uid)
        key = str(path)
        with self._lock:
            if key in self._done or key in self._waiting:
                self.metrics.instances.labels("duplicate").inc()
                return SUCCESS
            if len(self._waiting) >= self.options.max_queue:
                self.metrics.instances.labels("queue_full").inc()
                return OUT_OF_RESOURCES
            self._waiting.add(key)
        try:
            self.spool.write(path, data)
        except OSError as error:
            LOGGER.error("cannot spool %s: %s", path, error)
            with self._lock:
                self._waiting.discard(key)
            self.metrics.instances.labels("spool_failed").inc()
            return SPOOL_FAILED
        self.metrics.instances.labels("received").inc()
        self._enqueue(path)
        return SUCCESS

    def _enqueue(self, path: Path) -> None:
        self._queue.put(path)
        self.metrics.queue_depth.set(len(self._waiting))

    # -- the classifying side (the thread that calls run) --------------------------------------
    def run(self) -> None:
        """Drain the spool, listen, and classify until :meth:`stop`; what is left stays spooled."""
        for path in self.spool.pending(self._done):
            with self._lock:
                self._waiting.add(str(path))
            self._enqueue(path)
        if self._waiting:
            LOGGER.info("draining %d instance(s) left in the spool", len(self._waiting))
        options = self.options
        try:
            server = start_scp(
                (options.host, options.port),
                options.ae_title,
                self.offer,
                self.metrics,
                allowed_calling=options.allowed_calling,
                network_timeout=options.network_timeout,
                ssl_context=options.ssl_context,
            )
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
                        try:
                            first = self._queue.get(timeout=_IDLE_POLL_SECONDS)
                        except queue.Empty:
                            continue
                        self._round(writer, durable, first)
                finally:
                    os.close(durable)
                    self._close_session()
        finally:
            server.shutdown()
            self._stop.set()
            forwarder.join()

    def _open_session(self) -> SyncSession:
        """The listener's one session (decode workers, channels, card), opened on first use."""
        if self._session is None:
            session = SyncSession(self.options.model, replace(self.options.classify, metrics=self.metrics))
            self._session = session.__enter__()
        return self._session

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(None, None, None)

    def _round(self, writer: ResultWriter, durable: int, first: Path) -> None:
        """Classify ``first`` and whatever arrives until the queue is empty, on the one session."""
        taken: list[Path] = [first]
        try:
            run = self._open_session().classify(self._take(taken))
            try:
                for rows in run:
                    self._on_rows(writer, durable, rows)
            finally:
                run.close()
        except RadserveError as error:  # e.g. the server is unreachable: keep the spool, try again
            LOGGER.error("classification round failed (instances stay spooled): %s", error)
            self._close_session()  # the next round starts a fresh one
            self._stop.wait(self.options.classify.ready_timeout_seconds / 10)
        finally:
            for path in taken:
                if str(path) not in self._done:
                    self._queue.put(path)

    def _on_rows(self, writer: ResultWriter, durable: int, rows: list[ResultRow]) -> None:
        """One instance's rows: written and fsync'ed, then the instance leaves the spool."""
        writer.write(rows)
        os.fsync(durable)  # the rows survive a power cut before their instance leaves the spool
        key = rows[0].path
        with self._lock:
            self._done.add(key)
            self._waiting.discard(key)
            self.metrics.queue_depth.set(len(self._waiting))
        self.spool.remove(Path(key))
        failed = any(row.status != "ok" for row in rows)
        self.metrics.classified.labels("failed" if failed else "ok").inc()

    def _take(self, taken: list[Path]) -> Iterator[Path]:
        """``taken`` (the round's first instance), then queued ones until the queue is empty; read in
        the session's event loop, so it never blocks."""
        yield from list(taken)
        while not self._stop.is_set():
            try:
                path = self._queue.get_nowait()
            except queue.Empty:
                return
            taken.append(path)
            yield path

    def _forward_reports(self) -> None:
        """Every few seconds, and once more on stop: send the SRs waiting in ``sr_dir`` (own thread)."""
        destination = self.options.report_destination
        folder = self.options.classify.sr_dir
        if destination is None or folder is None:
            return
        stopping = False
        while not stopping:
            stopping = self._stop.wait(_FORWARD_INTERVAL_SECONDS)
            try:
                sent, unsent = send_reports(
                    folder, destination, self.options.ae_title, self.options.network_timeout
                )
            except OSError as error:
                LOGGER.warning("cannot forward reports to %s: %s", destination, error)
                sent, unsent = 0, 1
            self.metrics.reports_sent.labels("ok").inc(sent)
            self.metrics.reports_sent.labels("failed").inc(unsent)

    def wait_ready(self, timeout: float) -> bool:
        """Whether the DICOM port is open within ``timeout`` seconds (then :attr:`port` is set)."""
        return self._ready.wait(timeout)

    def stop(self) -> None:
        """Finish the instances in flight and return from :meth:`run`."""
        self._stop.set()
