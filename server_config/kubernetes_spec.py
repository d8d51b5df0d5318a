"""What a Kubernetes or KServe deployment of one model is made of (:class:`DeploymentSpec`), and the
pod pieces the Deployment and KServe's InferenceService share: Triton's options (model control,
restriction, TLS, drain), Secrets as files and variables, resources, Pod Security "restricted", preStop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radserve.errors import ConfigurationError
from radserve.server_config.triton_security import restricted_arguments, tls_arguments
from radserve.settings import SETTINGS
from radserve.transport import ADMIN_KEY_ENV

__all__ = [
    "CONTAINER_SECURITY",
    "POD_SECURITY",
    "REPOSITORY_MOUNT",
    "TRITON_IMAGE",
    "DeploymentSpec",
    "environment",
    "instance_kinds",
    "pre_stop",
    "resources",
    "secret_volumes",
    "triton_options",
]

Manifest = dict[str, Any]

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the release radserve is tested with
SECRET_ADMIN_KEY = "admin-key"  # the key inside the restriction Secret
GCS_CREDENTIALS = "credentials.json"  # the key inside the object storage Secret for gs://
REPOSITORY_MOUNT = "/models"
_TLS_MOUNT = "/etc/radserve/tls"  # tls.crt, tls.key of a kubernetes.io/tls Secret
_CLIENT_CA_MOUNT = "/etc/radserve/client-ca"  # ca.crt
_GCS_MOUNT = "/etc/radserve/gcs"
_TRITON_UID = 1000  # triton-server, the NGC image's unprivileged user


@dataclass(frozen=True)
class DeploymentSpec:
    """What varies between deployments of one model."""

    model: str
    replicas: int = 1
    gpu: bool = False
    namespace: str = "radserve"
    image: str = TRITON_IMAGE
    # pvc://CLAIM[/PATH] (a volume holding the model repository) or s3://, gs://, as:// (object storage,
    # credentials from the Secret ``object_storage_secret``: env for S3 and Azure, a file for GCS).
    repository: str = "pvc://radserve-model-repository"
    object_storage_secret: str = "radserve-object-storage"
    max_replicas: int = 0  # HPA ceiling; 0: four times ``replicas``
    queue_target_ms: float = 20.0  # ms of average queue time per request the HPA holds replicas to
    restricted_api_secret: str = ""  # Secret with key ``admin-key``: admin APIs need that header value
    tls_secret: str = ""  # kubernetes.io/tls Secret: gRPC served over TLS
    client_ca_secret: str = ""  # Secret with key ``ca.crt``: mutual TLS, clients signed by that CA
    # none: the repository as it is at start, no loading API; explicit: load/unload through the
    # (restricted) model-repository API, e.g. to publish a new version without a restart.
    model_control: str = "none"
    # Namespaces and pod labels (KEY=VALUE, this namespace) admitted by the NetworkPolicy; with
    # neither, pods of this namespace only.
    ingress_namespaces: tuple[str, ...] = ()
    ingress_pod_labels: tuple[str, ...] = ()
    drain_seconds: int = 15  # s the pod keeps serving after termination starts (preStop)
    # Instance kinds of the model's config.pbtxt (instance_kinds()); checked against ``gpu``.
    instance_kinds: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigurationError("replicas must be at least 1")
        if not self.repository.startswith(("pvc://", "s3://", "gs://", "as://")):
            raise ConfigurationError(f"repository {self.repository!r}: use pvc://, s3://, gs:// or as://")
        if self.model_control not in ("none", "explicit"):
            raise ConfigurationError(f"model control {self.model_control!r}: use none or explicit")
        if self.model_control == "explicit" and not self.restricted_api_secret:
            raise ConfigurationError(
                "explicit model control opens Triton's model-repository API (loading a Python-backend "
                "model runs code): give a restriction Secret (--restricted-api-secret)"
            )
        if self.tls_secret and not self.restricted_api_secret:
            raise ConfigurationError(
                "under TLS the plaintext HTTP port keeps only health open, its inference and metadata "
                "behind the admin key: give a restriction Secret (--restricted-api-secret)"
            )
        if self.client_ca_secret and not self.tls_secret:
            raise ConfigurationError("mutual TLS (--client-ca-secret) needs --tls-secret")
        for label in self.ingress_pod_labels:
            if "=" not in label:
                raise ConfigurationError(f"ingress pod label {label!r} is not KEY=VALUE")
        wanted = "KIND_GPU" if self.gpu else "KIND_CPU"
        wrong = sorted(self.instance_kinds - {wanted, "KIND_AUTO", "KIND_MODEL"})
        if wrong:
            raise ConfigurationError(
                f"model {self.model!r} has {', '.join(wrong)} instances but the pod is "
                f"{'a GPU' if self.gpu else 'a CPU'} pod: export it for that device or render "
                f"{'without' if self.gpu else 'with'} --gpu"
            )

    @property
    def name(self) -> str:
        return f"radserve-{self.model}".lower().replace("_", "-")

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "radserve-triton", "app.kubernetes.io/instance": self.name}

    @property
    def on_volume(self) -> bool:
        return self.repository.startswith("pvc://")

    @property
    def exit_timeout_seconds(self) -> int:
        return int(SETTINGS.server.stop_timeout_seconds)

    @property
    def grace_seconds(self) -> int:
        """terminationGracePeriodSeconds: the preStop drain, then Triton's exit timeout, then margin."""
        return self.drain_seconds + self.exit_timeout_seconds + 5

    def metadata(self, suffix: str = "") -> Manifest:
        return {"name": self.name + suffix, "namespace": self.namespace, "labels": dict(self.labels)}


def instance_kinds(config: Path) -> frozenset[str]:
    """The instance group kinds (``KIND_CPU``, ``KIND_GPU``, ...) of a model's ``config.pbtxt``.

    Args:
        config: the model's ``config.pbtxt``.

    Returns:
        The kinds its instance groups name; ``KIND_AUTO`` when it has none (Triton's default).

    Raises:
        ConfigurationError: the file is missing or does not parse with Triton's schema.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    try:
        parsed = text_format.Parse(config.read_text(encoding="utf-8"), pb.ModelConfig())
    except (OSError, text_format.ParseError) as error:
        raise ConfigurationError(f"model config {config}: {error}") from None
    kinds = {pb.ModelInstanceGroup.Kind.Name(group.kind) for group in parsed.instance_group}
    return frozenset(kinds or {"KIND_AUTO"})


def triton_options(spec: DeploymentSpec) -> list[str]:
    """The options of Triton's server shared by the Deployment and KServe: model control, readiness,
    drain, restriction (the key from the Secret at run time) and TLS."""
    control = ["--model-control-mode=explicit", f"--load-model={spec.model}"]
    options = [
        *(control if spec.model_control == "explicit" else ["--model-control-mode=none"]),
        "--disable-auto-complete-config",  # the config.pbtxt as exported, nothing guessed
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={spec.exit_timeout_seconds}",
    ]
    if spec.restricted_api_secret:  # health, and without TLS metadata and inference, stay open
        options += restricted_arguments(f"$({ADMIN_KEY_ENV})", http_data=bool(spec.tls_secret))
    if spec.tls_secret:
        client_ca = f"{_CLIENT_CA_MOUNT}/ca.crt" if spec.client_ca_secret else None
        options += tls_arguments(f"{_TLS_MOUNT}/tls.crt", f"{_TLS_MOUNT}/tls.key", client_ca)
    return options


def secret_volumes(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(pod volumes, container mounts) of the Secrets: TLS, the client CA, GCS credentials."""
    secrets = [(spec.tls_secret, "tls", _TLS_MOUNT), (spec.client_ca_secret, "client-ca", _CLIENT_CA_MOUNT)]
    if spec.repository.startswith("gs://"):
        secrets.append((spec.object_storage_secret, "gcs", _GCS_MOUNT))
    volumes, mounts = [], []
    for secret, name, path in secrets:
        if secret:
            volumes.append({"name": name, "secret": {"secretName": secret, "defaultMode": 0o440}})
            mounts.append({"name": name, "mountPath": path, "readOnly": True})
    return volumes, mounts


def resources(spec: DeploymentSpec, cpu_limit: bool = False) -> Manifest:
    """Requests and limits; ``cpu_limit`` sets the CPU limit to the request (where a runtime's own
    limit would otherwise merge in below it: KServe)."""
    requests = {"cpu": "4", "memory": "8Gi" if spec.gpu else "4Gi"}
    limits = {"memory": "16Gi" if spec.gpu else "8Gi"} | ({"cpu": requests["cpu"]} if cpu_limit else {})
    if spec.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = "1"
    return {"requests": requests, "limits": limits}


def environment(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(env, envFrom): the admin key and object storage credentials, from Secrets (S3 and Azure as
    variables, GCS as a credential file)."""
    env: list[Manifest] = []
    if spec.restricted_api_secret:
        key = {"secretKeyRef": {"name": spec.restricted_api_secret, "key": SECRET_ADMIN_KEY}}
        env.append({"name": ADMIN_KEY_ENV, "valueFrom": key})
    if spec.repository.startswith("gs://"):
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{_GCS_MOUNT}/{GCS_CREDENTIALS}"})
    environment_secret = spec.repository.startswith(("s3://", "as://"))
    env_from = [{"secretRef": {"name": spec.object_storage_secret}}] if environment_secret else []
    return env, env_from


# Pod Security Standards, "restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards/).
POD_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": _TRITON_UID,
    "runAsGroup": _TRITON_UID,
    "fsGroup": _TRITON_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY: Manifest = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pre_stop(spec: DeploymentSpec) -> Manifest:
    """Keep serving for ``drain_seconds`` after termination starts: the endpoints controller, kube-proxy
    and load balancers drop the pod meanwhile; then SIGTERM lets Triton finish what it holds."""
    return {"preStop": {"exec": {"command": ["sleep", str(spec.drain_seconds)]}}}
