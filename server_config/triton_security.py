"""tritonserver's transport security: TLS / mutual TLS on gRPC, restricted API groups, bind checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from radserve.errors import ServerError
from radserve.transport import ADMIN_KEY_HEADER, RESTRICTED_GROUPS, is_loopback

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
        client_ca = str(self.client_ca.resolve()) if self.client_ca is not None else None
        return tls_arguments(str(self.cert.resolve()), str(self.key.resolve()), client_ca)


def tls_arguments(cert: str, key: str, client_ca: str | None = None) -> list[str]:
    """tritonserver's gRPC SSL options for these file names (mutual TLS with ``client_ca``)."""
    arguments = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
    if client_ca is not None:
        arguments += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={client_ca}"]
    return arguments


# With gRPC behind TLS, tritonserver's plaintext HTTP port also closes these groups behind the key:
# only health (the kubelet's probes) stays open there (docs/how-to/kubernetes.md, "TLS").
HTTP_DATA_GROUPS = ("metadata", "inference")


def restricted_arguments(admin_key: str, http_data: bool = False) -> list[str]:
    """Put :data:`RESTRICTED_GROUPS` of gRPC and HTTP behind the ``radserve-admin-key`` header.

    ``admin_key`` may be a Kubernetes ``$(VARIABLE)`` reference, expanded from a Secret at run time;
    with ``http_data``, HTTP's metadata and inference need the key too (:data:`HTTP_DATA_GROUPS`).
    """
    if not admin_key or any(character in admin_key for character in ",:= \n"):
        raise ServerError("the admin key must be non-empty, without spaces, commas, colons or '='")
    groups = ",".join(RESTRICTED_GROUPS)
    http_groups = ",".join(RESTRICTED_GROUPS + (HTTP_DATA_GROUPS if http_data else ()))
    return [
        f"--grpc-restricted-protocol={groups}:{ADMIN_KEY_HEADER}={admin_key}",
        f"--http-restricted-api={http_groups}:{ADMIN_KEY_HEADER}={admin_key}",
    ]


def check_exposure(host: str, tls: ServerTls | None, insecure: bool) -> None:
    """Refuse a non-loopback address without TLS unless ``insecure`` says the network is trusted."""
    if tls is None and not insecure and not is_loopback(host):
        raise ServerError(
            f"refusing to listen on {host} without TLS: radiographs and results would cross the network "
            "in clear text. Give --tls-cert and --tls-key (and --tls-client-ca for mutual TLS), "
            "or --insecure on a network you trust"
        )
