"""How a client reaches its servers: :class:`ConnectionOptions`, the same for every verb."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from radserve.client.retry import RetryPolicy
from radserve.settings import SETTINGS
from radserve.transport import ClientTls

__all__ = ["ConnectionOptions"]


@dataclass(frozen=True)
class ConnectionOptions:
    """How a client reaches its servers: the same for every verb (``radserve.cli._common``).

    Args:
        url: Triton gRPC ``HOST:PORT``; several (replicas serving the same models) are balanced.
        tls: TLS to the servers (mutual with a client certificate); ``None`` for plaintext.
        admin_key: sent on the restricted calls (model config, repository index).
        retry: backoff, per-request timeout and give-up time (:class:`RetryPolicy`).
        ready_timeout_seconds: how long to wait for a model to be ready on some server.
    """

    url: str | Sequence[str] = SETTINGS.grpc_url
    tls: ClientTls | None = None
    admin_key: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ready_timeout_seconds: float = SETTINGS.client.ready_timeout_seconds

    @classmethod
    def of(cls, target: str | Sequence[str] | ConnectionOptions) -> ConnectionOptions:
        """``target`` itself, or plain options to its URL(s).

        Args:
            target: Server URL(s), or the full connection options.

        Returns:
            The connection options.
        """
        return target if isinstance(target, ConnectionOptions) else cls(target)

    @property
    def urls(self) -> tuple[str, ...]:
        """The server URLs, in order."""
        return (self.url,) if isinstance(self.url, str) else tuple(self.url)
