"""nginx as the gRPC load balancer in front of tritonserver replicas (``server_config/nginx/``).

:func:`render_nginx_config` fills the template: one ``server`` line per replica with passive health
checks, HTTP/2 on the listening side (cleartext h2c, or TLS terminated here), ``grpc_pass`` with
failover to the next replica for requests that fail before an answer started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from radserve.errors import ConfigurationError

__all__ = ["NginxConfig", "render_nginx_config"]


@dataclass(frozen=True)
class NginxConfig:
    """What the template needs; ``replicas`` are tritonserver gRPC ``HOST:PORT`` addresses."""

    replicas: Sequence[str]
    listen: str = "127.0.0.1:8001"  # HOST:PORT nginx listens on
    prefix: Path = Path("/var/lib/radserve-nginx")  # pid, logs and temp files
    max_fails: int = 1  # failed attempts within fail_timeout before a replica is left out
    fail_timeout_seconds: int = 10  # s
    workers: int | str = "auto"
    tls_certificate: Path | None = None  # PEM; with the key, nginx terminates TLS
    tls_key: Path | None = None


def _server_lines(config: NginxConfig) -> str:
    if not config.replicas:
        raise ConfigurationError("nginx needs at least one replica")
    for replica in config.replicas:
        host, _, port = replica.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"replica {replica!r} is not HOST:PORT")
    return "\n".join(
        f"        server {replica} max_fails={config.max_fails} fail_timeout={config.fail_timeout_seconds}s;"
        for replica in config.replicas
    )


def _listen_lines(config: NginxConfig) -> str:
    if (config.tls_certificate is None) != (config.tls_key is None):
        raise ConfigurationError("TLS needs both a certificate and its key")
    if config.tls_certificate is None:
        return f"        listen {config.listen} http2;"
    return "\n".join(
        (
            f"        listen {config.listen} ssl http2;",
            f"        ssl_certificate {config.tls_certificate.resolve()};",
            f"        ssl_certificate_key {config.tls_key.resolve()};",  # type: ignore[union-attr]  # set with the cert (l. 48)
            "        ssl_protocols TLSv1.2 TLSv1.3;",
        )
    )


def render_nginx_config(config: NginxConfig) -> str:
    """The nginx configuration file for ``config``."""
    template = resources.files("radserve.server_config").joinpath("nginx/radserve-grpc.conf.template")
    values = {
        "@WORKERS@": str(config.workers),
        "@PREFIX@": str(config.prefix.resolve()),
        "@SERVERS@": _server_lines(config),
        "@LISTEN@": _listen_lines(config),
        "@TRIES@": str(len(config.replicas)),
    }
    text = template.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(name, value)
    return text
