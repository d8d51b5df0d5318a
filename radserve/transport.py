"""What server and clients share about transport security: TLS files, the admin key header, loopback.

tritonserver 2.51 speaks TLS (and mutual TLS) on gRPC only; its HTTP and metrics endpoints are
plaintext, so with TLS ``radserve serve`` keeps them on loopback (docs/how-to/security.md).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from radserve.errors import ServerError

# The one restriction contract of serve, the client, nginx and the Kubernetes manifests. tritonserver's
# ``--{grpc,http}-restricted-...=<groups>:<key>=<value>`` takes ADMIN_KEY_HEADER as <key>; over HTTP the
# header is <key> itself, over gRPC tritonserver expects it with its own prefix (GRPC_ADMIN_KEY_HEADER).
# Lower case: gRPC metadata requires it.
ADMIN_KEY_HEADER = "radserve-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"
# The variable holding the key: read by the command line when --admin-key is not given (a flag shows
# in `ps`), and set from the restriction Secret in the Kubernetes manifests.
ADMIN_KEY_ENV = "RADSERVE_ADMIN_KEY"
# Triton's API groups behind the admin key; health, metadata and inference stay open.
RESTRICTED_GROUPS = ("model-repository", "model-config", "statistics", "trace", "logging", "shared-memory")


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***`` (for log lines)."""
    return text.replace(secret, "***") if secret else text


def is_loopback(host: str) -> bool:
    """Whether an address is a loopback address.

    Args:
        host: An IP address or host name.

    Returns:
        True for ``localhost`` and loopback IP addresses; False for anything else, names included.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _readable(path: Path, what: str) -> str:
    if not path.is_file():
        raise ServerError(f"{what} {path} does not exist")
    return str(path)


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS: the CA that signed the server, and its own certificate for mutual TLS."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ServerError(
                "a client certificate needs its key and a key its certificate (--tls-cert/--tls-key)"
            )

    def credentials(self) -> dict[str, str | None]:
        """Keyword arguments of ``tritonclient.grpc`` clients (file names): root certificates, key, chain."""
        return {
            "root_certificates": _readable(self.ca, "CA certificate"),
            "private_key": _readable(self.key, "client key") if self.key else None,
            "certificate_chain": _readable(self.cert, "client certificate") if self.cert else None,
        }


def client_tls(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ClientTls | None:
    """The :class:`ClientTls` of the command-line flags.

    Args:
        ca: The CA that signed the server's certificate; None for plaintext.
        cert: The client certificate, for mutual TLS.
        key: Its private key.

    Returns:
        The TLS options; None for plaintext.

    Raises:
        ServerError: A client certificate or key was given without a CA.
    """
    if ca is None:
        if cert is not None or key is not None:
            raise ServerError("--tls-cert/--tls-key need --tls-ca (the CA that signed the server)")
        return None
    return ClientTls(ca, cert, key)


def pseudonym(value: str, key: bytes, hex_digits: int = 16) -> str:
    """A keyed hash of a value: stable per key, not reversible without it.

    Args:
        value: What to hide (a path, a UID).
        key: The secret.
        hex_digits: How many hex digits of the hash to keep (at most 64).

    Returns:
        HMAC-SHA256 of ``value`` under ``key``, its first ``hex_digits`` hex digits.
    """
    return hmac.new(key, value.encode("utf-8"), sha256).hexdigest()[:hex_digits]
