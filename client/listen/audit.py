"""An ATNA-style audit trail of the listener, as JSON lines (docs/how-to/listen.md, "Audit").

One line per association (``event: "association"``: calling and called AE titles, the peer's
address, the TLS peer's certificate subject, the result, the C-STORE statuses answered and how
many) and one per SR forwarding attempt (``event: "report"``: destination, SR file, status,
outcome). Lines carry no patient attribute and no UID of a patient's instance: who sent how much,
when, and what radserve answered (the questions of IHE ATNA's "DICOM Instances Transferred").
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


class AuditLog:
    """Appends audit records to ``path`` (0600); with ``path`` None, records nothing.

    Args:
        path: the JSON-lines file, or None.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._descriptor = -1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(self._descriptor, 0o600)

    def record(self, event: str, **fields: Any) -> None:
        """Append one record: UTC time, ``event`` and ``fields`` (JSON values)."""
        if self._descriptor < 0:
            return
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"time": now, "event": event, **fields}, sort_keys=True) + "\n"
        with self._lock:
            os.write(self._descriptor, line.encode())

    def close(self) -> None:
        with self._lock:
            if self._descriptor >= 0:
                os.close(self._descriptor)
                self._descriptor = -1
