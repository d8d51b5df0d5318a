"""tritonserver's transport security: TLS / mutual TLS on gRPC, restricted API groups, bind checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radserve.errors import ServerError
from radserve.security import ADMIN_KEY_HEADER, RESTRICTED_GROUPS, is_loopback

# tritonserver 2.51 has no TLS on HTTP or metrics: with TLS they listen here only.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate and key; with ``client_ca``, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def __post_init__(self) -> None:
        for what, path in (("certificate", self.cert), ("key", self.key), ("client CA", self.client_ca)):
            if path is not None and not path.is_file():
                raise ServerError(f"TLS {what} {path} does not exist")

    def arguments(self) -> list[str]:
        """tritonserver's gRPC SSL options."""
        arguments = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={self.cert.resolve()}",
            f"--grpc-server-key={self.key.resolve()}",
        ]
        if self.client_ca is not None:
            arguments += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.client_ca.resolve()}"]
        return arguments


def restricted_arguments(admin_key: str) -> list[str]:
    """Put :data:`RESTRICTED_GROUPS` of gRPC and HTTP behind the ``radserve-admin-key`` header."""
    if not admin_key or any(character in admin_key for character in ",:= \n"):
        raise ServerError("the admin key must be non-empty, without spaces, commas, colons or '='")
    groups = ",".join(RESTRICTED_GROUPS)
    return [
        f"--grpc-restricted-protocol={groups}:{ADMIN_KEY_HEADER}={admin_key}",
        f"--http-restricted-api={groups}:{ADMIN_KEY_HEADER}={admin_key}",
    ]


def check_exposure(host: str, tls: ServerTls | None, insecure: bool) -> None:
    """Refuse a non-loopback address without TLS unless ``insecure`` says the network is trusted."""
    if tls is None and not insecure and not is_loopback(host):
        raise ServerError(
            f"refusing to listen on {host} without TLS: radiographs and results would cross the network "
            "in clear text. Give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), "
            "or --insecure on a network you trust"
        )
