"""A decode worker process: prepares files sent by :class:`radserve.client.decode_pool.DecodePool`.

Started as ``python -c`` with a bootstrap that sets ``sys.path`` and imports this module only: the
caller's ``__main__`` (a script, ``<stdin>``, a notebook) is never imported again here. Protocol, as
pickles: in, ``sys.path`` (read by the bootstrap) then the modules to import, then ``(path, card)``
per file; out, ``("ready", pid)`` or ``("failed", message)``, then one ``PreparedFile`` per file.
The bootstrap's one argument caps the worker's address space (``RLIMIT_AS``, bytes; 0: no cap), so a
file declaring huge frames fails that file, not the host.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import signal
import sys
from typing import IO, Any

from radserve.reasons import Reason

BOOTSTRAP = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from radserve.client._decode_worker import serve; serve()"
)


def _send(channel: IO[bytes], message: Any) -> None:
    channel.write(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    channel.flush()


def serve() -> None:
    """Answer requests until the pool closes stdin; the parent handles Ctrl-C for both."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cap = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if cap > 0:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the channel
    requests = sys.stdin.buffer
    try:
        for module in pickle.load(requests):
            importlib.import_module(module)
        from radserve.client.flow import PreparedFile, prepare_file
        from radserve.client.rows import internal_error
    except BaseException as error:
        _send(channel, ("failed", f"{type(error).__name__}: {error}"))
        return
    _send(channel, ("ready", os.getpid()))
    while True:
        try:
            path, card = pickle.load(requests)
        except EOFError:
            return
        prepared = prepare_file(path, card)
        try:
            _send(channel, prepared)
        except (pickle.PicklingError, TypeError, AttributeError) as error:
            _send(
                channel,
                PreparedFile(path, error_reason=Reason.INTERNAL_ERROR, error=internal_error(path, error)),
            )
