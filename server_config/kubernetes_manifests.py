"""Kubernetes and KServe manifests for one model, rendered in code (``radserve deploy render``).

- a Deployment of NVIDIA's Triton image (``onnxruntime`` or ``tensorrt`` repository from a volume
  or object storage; readiness/liveness/startup on Triton's ``/v2/health/*``; optional
  restricted admin APIs and gRPC TLS; non-root, read-only root file system);
- a Service (gRPC, HTTP, metrics) and a headless one for client-side balancing (gRPC keeps one
  connection per client, so a ClusterIP spreads connections, not requests);
- a HorizontalPodAutoscaler on the average queue time per request, served by the Prometheus
  adapter from Triton's ``nv_inference_queue_duration_us`` (its rule is rendered too);
- scrape annotations for Prometheus on the pods;
- a KServe ``InferenceService`` running the same repository on KServe's Triton runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from radserve.errors import ConfigurationError
from radserve.settings import SETTINGS

__all__ = ["QUEUE_METRIC", "DeploymentSpec", "adapter_rule", "render_manifests", "to_yaml"]

Manifest = dict[str, Any]

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the release radserve is tested with
QUEUE_METRIC = "radserve_triton_queue_seconds_per_request"
_RESTRICTED = "model-repository,model-config,shared-memory,statistics,trace,logging"
_REPOSITORY_MOUNT = "/models"
_TLS_MOUNT = "/etc/radserve/tls"
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
    # credentials from the Secret ``object_storage_secret``).
    repository: str = "pvc://radserve-model-repository"
    object_storage_secret: str = "radserve-object-storage"
    max_replicas: int = 0  # HPA ceiling; 0: four times ``replicas``
    queue_target_ms: float = 20.0  # ms of average queue time per request the HPA holds replicas to
    restricted_api_secret: str = ""  # Secret with key ``admin-key``: admin APIs need that header value
    tls_secret: str = ""  # kubernetes.io/tls Secret: gRPC served over TLS

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigurationError("replicas must be at least 1")
        if not self.repository.startswith(("pvc://", "s3://", "gs://", "as://")):
            raise ConfigurationError(f"repository {self.repository!r}: use pvc://, s3://, gs:// or as://")

    @property
    def name(self) -> str:
        return f"radserve-{self.model}".lower().replace("_", "-")

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": "radserve-triton", "app.kubernetes.io/instance": self.name}

    @property
    def on_volume(self) -> bool:
        return self.repository.startswith("pvc://")

    def metadata(self, suffix: str = "") -> Manifest:
        return {"name": self.name + suffix, "namespace": self.namespace, "labels": dict(self.labels)}


def _triton_args(spec: DeploymentSpec) -> list[str]:
    repository = _REPOSITORY_MOUNT if spec.on_volume else spec.repository
    args = [
        "tritonserver",
        f"--model-repository={repository}",
        "--model-control-mode=explicit",
        f"--load-model={spec.model}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={int(SETTINGS.server.stop_timeout_seconds)}",
        f"--grpc-port={SETTINGS.ports.grpc}",
        f"--http-port={SETTINGS.ports.http}",
        "--allow-metrics=true",
        f"--metrics-port={SETTINGS.ports.metrics}",
        f"--allow-gpu-metrics={'true' if spec.gpu else 'false'}",
        "--metrics-config=counter_latencies=true",
        "--metrics-config=summary_latencies=true",
    ]
    if spec.restricted_api_secret:  # health, metadata and inference stay open (probes, clients)
        args += [
            f"--grpc-restricted-protocol={_RESTRICTED}:admin-key=$(RADSERVE_ADMIN_KEY)",
            f"--http-restricted-api={_RESTRICTED}:admin-key=$(RADSERVE_ADMIN_KEY)",
        ]
    if spec.tls_secret:
        args += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={_TLS_MOUNT}/tls.crt",
            f"--grpc-server-key={_TLS_MOUNT}/tls.key",
        ]
    return args


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _volumes(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(pod volumes, container mounts): repository, /tmp and /dev/shm, TLS."""
    volumes: list[Manifest] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
    if spec.on_volume:
        claim, _, sub_path = spec.repository.removeprefix("pvc://").partition("/")
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mount = {"name": "models", "mountPath": _REPOSITORY_MOUNT, "readOnly": True}
        mounts.append(mount | ({"subPath": sub_path} if sub_path else {}))
    if spec.tls_secret:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls_secret}})
        mounts.append({"name": "tls", "mountPath": _TLS_MOUNT, "readOnly": True})
    return volumes, mounts


def _resources(spec: DeploymentSpec) -> Manifest:
    if spec.gpu:
        return {
            "requests": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
        }
    return {"requests": {"cpu": "4", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}


def _environment(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(env, envFrom): the admin key and object storage credentials, from Secrets."""
    env = []
    if spec.restricted_api_secret:
        key = {"secretKeyRef": {"name": spec.restricted_api_secret, "key": "admin-key"}}
        env.append({"name": "RADSERVE_ADMIN_KEY", "valueFrom": key})
    env_from = [] if spec.on_volume else [{"secretRef": {"name": spec.object_storage_secret}}]
    return env, env_from


def _container(spec: DeploymentSpec) -> Manifest:
    ports = SETTINGS.ports
    volumes_mounts = _volumes(spec)[1]
    env, env_from = _environment(spec)
    container: Manifest = {
        "name": "triton",
        "image": spec.image,
        "args": _triton_args(spec),
        "ports": [
            {"name": "http", "containerPort": ports.http},
            {"name": "grpc", "containerPort": ports.grpc},
            {"name": "metrics", "containerPort": ports.metrics},
        ],
        # Startup allows 10 min for loading (TensorRT plans, object storage); then liveness restarts a
        # hung server and readiness (strict: every loaded model ready) takes a pod out of the Service.
        "startupProbe": _probe("/v2/health/live", 5, 120),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "resources": _resources(spec),
        "volumeMounts": volumes_mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env:
        container["env"] = env
    if env_from:
        container["envFrom"] = env_from
    return container


def _deployment(spec: DeploymentSpec) -> Manifest:
    pod: Manifest = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": _TRITON_UID,
            "runAsGroup": _TRITON_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": int(SETTINGS.server.stop_timeout_seconds) + 10,
        "containers": [_container(spec)],
        "volumes": _volumes(spec)[0],
    }
    if spec.gpu:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    scrape = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(SETTINGS.ports.metrics),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": spec.metadata(),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": dict(spec.labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": dict(spec.labels), "annotations": scrape}, "spec": pod},
        },
    }


def _services(spec: DeploymentSpec) -> list[Manifest]:
    ports = SETTINGS.ports
    service_ports = [
        {"name": "grpc", "port": ports.grpc, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
        {"name": "http", "port": ports.http, "targetPort": "http"},
        {"name": "metrics", "port": ports.metrics, "targetPort": "metrics"},
    ]
    if spec.tls_secret:
        service_ports[0]["appProtocol"] = "grpc"
    services = []
    for suffix, extra in (("", {"type": "ClusterIP"}), ("-pods", {"clusterIP": "None"})):
        body = {"selector": dict(spec.labels), "ports": service_ports} | extra
        services.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": spec.metadata(suffix), "spec": body}
        )
    return services


def _autoscaler(spec: DeploymentSpec) -> Manifest:
    target = {"type": "AverageValue", "averageValue": f"{round(spec.queue_target_ms)}m"}  # milli-seconds
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": spec.metadata(),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": spec.replicas,
            "maxReplicas": spec.max_replicas or 4 * spec.replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": QUEUE_METRIC}, "target": target}}],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 30},
                "scaleDown": {"stabilizationWindowSeconds": 300},
            },
        },
    }


def adapter_rule(spec: DeploymentSpec) -> Manifest:
    """The Prometheus adapter rule serving :data:`QUEUE_METRIC` per pod: seconds queued per request."""
    matchers = "<<.LabelMatchers>>"
    queued = f"sum(rate(nv_inference_queue_duration_us{{{matchers}}}[1m])) by (<<.GroupBy>>)"
    requests = f"sum(rate(nv_inference_request_success{{{matchers}}}[1m])) by (<<.GroupBy>>)"
    return {
        "seriesQuery": f'nv_inference_queue_duration_us{{model="{spec.model}",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
        "metricsQuery": f"{queued} / clamp_min({requests}, 1e-9) / 1e6",
    }


def _adapter_config(spec: DeploymentSpec) -> Manifest:
    import yaml

    rules = yaml.safe_dump({"rules": [adapter_rule(spec)]}, sort_keys=False, width=200)
    metadata = spec.metadata("-prometheus-adapter-rules")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"config.yaml": rules}}


def _inference_service(spec: DeploymentSpec) -> Manifest:
    """KServe's InferenceService: the same repository on KServe's Triton runtime (v2 protocol, gRPC)."""
    storage = spec.repository if not spec.on_volume else spec.repository.rstrip("/") + "/"
    model: Manifest = {
        "modelFormat": {"name": "triton"},
        "runtime": "kserve-tritonserver",
        "protocolVersion": "v2",
        "storageUri": storage,
        "args": [f"--load-model={spec.model}", "--model-control-mode=explicit", "--strict-readiness=true"],
        "ports": [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}],
        "resources": _resources(spec),
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": spec.metadata("-kserve")
        | {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
        "spec": {
            "predictor": {
                "minReplicas": spec.replicas,
                "maxReplicas": spec.max_replicas or 4 * spec.replicas,
                "model": model,
            }
        },
    }


def render_manifests(spec: DeploymentSpec) -> dict[str, list[Manifest]]:
    """Manifests by file name: the plain Kubernetes set and, apart, KServe's InferenceService."""
    return {
        "deployment.yaml": [_deployment(spec)],
        "service.yaml": _services(spec),
        "autoscaler.yaml": [_autoscaler(spec), _adapter_config(spec)],
        "kserve-inferenceservice.yaml": [_inference_service(spec)],
    }


def to_yaml(manifests: list[Manifest]) -> str:
    """Documents separated by ``---``, keys in the order written, multi-line strings as blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text)
    return "---\n".join(
        yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=120) for manifest in manifests
    )
