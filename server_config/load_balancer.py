"""nginx as the gRPC load balancer in front of tritonserver replicas (``server_config/nginx/``).

:func:`render_nginx_config` fills the template: one ``server`` line per replica with passive health
checks, HTTP/2 on the listening side (cleartext h2c on loopback only, or TLS terminated here),
``grpc_pass`` with failover to the next replica for requests that fail before an answer started,
over TLS (verified, mutual with a client certificate) to replicas that serve it, and Triton's admin
RPCs answered 403 unless asked for. The admin key header (:mod:`radserve.transport`) passes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from radserve.errors import ConfigurationError
from radserve.transport import is_loopback

__all__ = ["ADMIN_RPCS", "NginxConfig", "render_nginx_config"]

# Triton's gRPC methods that change or expose the server (repository, statistics, trace, logging,
# shared memory): not proxied unless ``admin_rpcs``. The model config and repository index stay
# proxied (radserve's client reads its card and the model list; Triton keeps them behind the key).
ADMIN_RPCS = (
    "RepositoryModelLoad", "RepositoryModelUnload", "ModelStatistics", "TraceSetting", "LogSettings",
    "SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
)  # fmt: skip


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
    insecure: bool = False  # allow a non-loopback listen without TLS (a network you trust)
    upstream_ca: Path | None = None  # the replicas serve TLS signed by this CA (PEM): verified
    upstream_server_name: str = "localhost"  # the name their certificates carry (and SNI)
    upstream_certificate: Path | None = None  # nginx's client certificate for replicas with mutual TLS
    upstream_key: Path | None = None
    admin_rpcs: bool = False  # proxy Triton's admin RPCs (ADMIN_RPCS) too


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
        host = config.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"
        if not is_loopback(host) and not config.insecure:
            raise ConfigurationError(
                f"refusing to listen on {config.listen} without TLS: give a certificate and key "
                "(--tls-cert/--tls-key), or --insecure on a network you trust"
            )
        return f"        listen {config.listen} http2;"
    return "\n".join(
        (
            f"        listen {config.listen} ssl http2;",
            f"        ssl_certificate {config.tls_certificate.resolve()};",
            f"        ssl_certificate_key {config.tls_key.resolve()};",  # type: ignore[union-attr]  # set with the cert (l. 48)
            "        ssl_protocols TLSv1.2 TLSv1.3;",
        )
    )


def _upstream_tls_lines(config: NginxConfig) -> str:
    if (config.upstream_certificate is None) != (config.upstream_key is None):
        raise ConfigurationError(
            "a client certificate to the replicas needs its key and the key its certificate"
        )
    if config.upstream_ca is None:
        if config.upstream_certificate is not None:
            raise ConfigurationError("a client certificate to the replicas needs their CA (--upstream-ca)")
        return ""
    lines = [
        f"            grpc_ssl_trusted_certificate {config.upstream_ca.resolve()};",
        "            grpc_ssl_verify on;",
        f"            grpc_ssl_name {config.upstream_server_name};",
        "            grpc_ssl_server_name on;",
        "            grpc_ssl_protocols TLSv1.2 TLSv1.3;",
    ]
    if config.upstream_certificate is not None:
        lines += [
            f"            grpc_ssl_certificate {config.upstream_certificate.resolve()};",
            f"            grpc_ssl_certificate_key {config.upstream_key.resolve()};",  # type: ignore[union-attr]
        ]
    return "\n".join(lines)


def _admin_lines(config: NginxConfig) -> str:
    if config.admin_rpcs:
        return ""
    methods = "|".join(ADMIN_RPCS)
    # HTTP 403 reaches gRPC clients as PERMISSION_DENIED.
    return "\n".join(
        (
            f"        location ~ ^/inference\\.GRPCInferenceService/({methods})$ {{",
            "            return 403;",
            "        }",
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
        "@ADMIN@": _admin_lines(config),
        "@UPSTREAM_SCHEME@": "grpcs" if config.upstream_ca is not None else "grpc",
        "@UPSTREAM_TLS@": _upstream_tls_lines(config),
    }
    text = template.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(name, value) if value else text.replace(f"{name}\n", "")
    return text
