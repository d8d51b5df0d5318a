"""The listener's Prometheus series, in the same registry as the classify runner's.

- ``radserve_listen_associations_total{result}``: ``accepted``, ``rejected`` (calling AE title not
  allowed, nothing acceptable proposed) or ``aborted``.
- ``radserve_listen_instances_total{outcome}``: C-STORE requests by what the listener answered:
  ``received`` (spooled, success), ``duplicate`` (already classified, success), ``queue_full``
  (0xA700), ``spool_failed`` (0xA701, the spool could not be written), ``unreadable`` (0xC000).
- ``radserve_listen_classified_total{outcome}``: received instances whose rows are written,
  ``ok`` (every row ok) or ``failed``; rows themselves are ``radserve_radiographs_total``.
- ``radserve_listen_queue_depth``: instances spooled and not yet classified (the backlog), those
  waiting for another try included.
- ``radserve_listen_backlog_oldest_seconds``: age of the oldest instance in the backlog.
- ``radserve_listen_retries_total{cause}``: tries scheduled again, ``transient`` (a transient row:
  the instance stays spooled) or ``failure`` (an exception while handling it).
- ``radserve_listen_failures_total``: exceptions while handling one instance (the listener went on);
  ``radserve_listen_quarantined_total``: instances moved to the quarantine folder after too many.
- ``radserve_listen_reports_sent_total{outcome}``: SR documents stored by the report destination
  (``ok``: success or a warning status) and failed attempts (``failed``: a failure status, refused,
  or destination down).
- ``radserve_listen_reports_pending``: SRs waiting to be forwarded;
  ``radserve_listen_reports_dead_lettered_total``: SRs moved to the dead-letter folder;
  ``radserve_listen_report_destination_up``: 1 when the last association to the destination was
  established, 0 when it failed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from radserve.client.run_metrics import ClientMetrics

__all__ = ["ListenerMetrics"]


class ListenerMetrics(ClientMetrics):
    """The classify runner's series plus the listener's."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.associations = Counter(
            "radserve_listen_associations",
            "DICOM associations by result",
            ["result"],
            registry=self.registry,
        )
        self.instances = Counter(
            "radserve_listen_instances",
            "C-STORE requests by what the listener answered",
            ["outcome"],
            registry=self.registry,
        )
        self.classified = Counter(
            "radserve_listen_classified",
            "Received instances whose result rows are written",
            ["outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "radserve_listen_queue_depth",
            "Instances spooled and not yet classified",
            registry=self.registry,
        )
        self.backlog_oldest = Gauge(
            "radserve_listen_backlog_oldest_seconds",
            "Age of the oldest instance spooled and not yet classified",
            registry=self.registry,
        )
        self.retries = Counter(
            "radserve_listen_retries",
            "Instances scheduled for another try, by cause",
            ["cause"],
            registry=self.registry,
        )
        self.failures = Counter(
            "radserve_listen_failures",
            "Exceptions while handling one instance",
            registry=self.registry,
        )
        self.quarantined = Counter(
            "radserve_listen_quarantined",
            "Instances moved to the quarantine folder after repeated failures",
            registry=self.registry,
        )
        self.reports_sent = Counter(
            "radserve_listen_reports_sent",
            "SR documents forwarded to the report destination by C-STORE",
            ["outcome"],
            registry=self.registry,
        )
        self.reports_pending = Gauge(
            "radserve_listen_reports_pending", "SR documents waiting to be forwarded", registry=self.registry
        )
        self.reports_dead_lettered = Counter(
            "radserve_listen_reports_dead_lettered",
            "SR documents moved to the dead-letter folder after their last failed attempt",
            registry=self.registry,
        )
        self.report_destination_up = Gauge(
            "radserve_listen_report_destination_up",
            "Whether the last association to the report destination was established",
            registry=self.registry,
        )
        for result in ("accepted", "rejected", "aborted"):
            self.associations.labels(result)
        for outcome in ("received", "duplicate", "queue_full", "spool_failed", "unreadable"):
            self.instances.labels(outcome)
        for cause in ("transient", "failure"):
            self.retries.labels(cause)
        for outcome in ("ok", "failed"):
            self.classified.labels(outcome)
            self.reports_sent.labels(outcome)
