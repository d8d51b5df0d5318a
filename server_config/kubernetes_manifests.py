"""Kubernetes and KServe manifests for one model, rendered in code (``radserve deploy render``).

- a Deployment of NVIDIA's Triton image (``onnxruntime`` or ``tensorrt`` repository from a volume
  or object storage; readiness/liveness/startup on Triton's ``/v2/health/*``; model control ``none``
  unless asked, admin APIs behind the key of :mod:`radserve.transport`; optional gRPC TLS and mutual
  TLS; Pod Security "restricted"; a preStop drain before Triton's own exit timeout);
- a Service (gRPC, HTTP, metrics) and a headless one for client-side balancing (gRPC keeps one
  connection per client, so a ClusterIP spreads connections, not requests);
- a NetworkPolicy admitting ingress only from the namespaces and pod labels given;
- a HorizontalPodAutoscaler on the average queue time per request, served by the Prometheus
  adapter from Triton's ``nv_inference_queue_duration_us`` (its rule is rendered too);
- scrape annotations for Prometheus on the pods;
- a KServe ``InferenceService`` running the same repository on KServe's Triton runtime
  (:mod:`radserve.server_config.kserve_manifest`).
"""

from __future__ import annotations

from typing import Any

from radserve.server_config.kserve_manifest import inference_service
from radserve.server_config.kubernetes_spec import (
    CONTAINER_SECURITY,
    POD_SECURITY,
    REPOSITORY_MOUNT,
    DeploymentSpec,
    environment,
    pre_stop,
    resources,
    secret_volumes,
    triton_options,
)
from radserve.settings import SETTINGS

__all__ = ["QUEUE_METRIC", "DeploymentSpec", "adapter_rule", "render_manifests", "to_yaml"]

Manifest = dict[str, Any]

QUEUE_METRIC = "radserve_triton_queue_seconds_per_request"


def _triton_args(spec: DeploymentSpec) -> list[str]:
    repository = REPOSITORY_MOUNT if spec.on_volume else spec.repository
    return [
        "tritonserver",
        f"--model-repository={repository}",
        *triton_options(spec),
        f"--grpc-port={SETTINGS.ports.grpc}",
        f"--http-port={SETTINGS.ports.http}",
        "--allow-metrics=true",
        f"--metrics-port={SETTINGS.ports.metrics}",
        f"--allow-gpu-metrics={'true' if spec.gpu else 'false'}",
        "--metrics-config=counter_latencies=true",
        "--metrics-config=summary_latencies=true",
    ]


def _probe(path: str, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _volumes(spec: DeploymentSpec) -> tuple[list[Manifest], list[Manifest]]:
    """(pod volumes, container mounts): repository, /tmp and /dev/shm, Secrets."""
    volumes: list[Manifest] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
    ]
    mounts: list[Manifest] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
    if spec.on_volume:
        claim, _, sub_path = spec.repository.removeprefix("pvc://").partition("/")
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mount = {"name": "models", "mountPath": REPOSITORY_MOUNT, "readOnly": True}
        mounts.append(mount | ({"subPath": sub_path} if sub_path else {}))
    secret_volumes_, secret_mounts = secret_volumes(spec)
    return volumes + secret_volumes_, mounts + secret_mounts


def _container(spec: DeploymentSpec) -> Manifest:
    ports = SETTINGS.ports
    env, env_from = environment(spec)
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
        "lifecycle": pre_stop(spec),
        "resources": resources(spec),
        "volumeMounts": _volumes(spec)[1],
        "securityContext": dict(CONTAINER_SECURITY),
    }
    if env:
        container["env"] = env
    if env_from:
        container["envFrom"] = env_from
    return container


def _deployment(spec: DeploymentSpec) -> Manifest:
    pod: Manifest = {
        "automountServiceAccountToken": False,
        "securityContext": dict(POD_SECURITY),
        "terminationGracePeriodSeconds": spec.grace_seconds,
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
    """gRPC and metrics; HTTP too unless under TLS (then the kubelet reaches the probes on the pod)."""
    ports = SETTINGS.ports
    grpc_protocol = "grpc" if spec.tls_secret else "kubernetes.io/h2c"
    service_ports = [
        {"name": "grpc", "port": ports.grpc, "targetPort": "grpc", "appProtocol": grpc_protocol},
        *([] if spec.tls_secret else [{"name": "http", "port": ports.http, "targetPort": "http"}]),
        {"name": "metrics", "port": ports.metrics, "targetPort": "metrics"},
    ]
    services = []
    for suffix, extra in (("", {"type": "ClusterIP"}), ("-pods", {"clusterIP": "None"})):
        body = {"selector": dict(spec.labels), "ports": service_ports} | extra
        services.append(
            {"apiVersion": "v1", "kind": "Service", "metadata": spec.metadata(suffix), "spec": body}
        )
    return services


def _network_policy(spec: DeploymentSpec) -> Manifest:
    """Ingress to the pods only from the namespaces and pod labels given (this namespace's pods when
    neither is). Traffic from the pod's own node, the kubelet's probes, is always allowed."""
    peers: list[Manifest] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        for namespace in spec.ingress_namespaces
    ]
    for label in spec.ingress_pod_labels:
        key, _, value = label.partition("=")
        peers.append({"podSelector": {"matchLabels": {key: value}}})
    ports = [{"port": name, "protocol": "TCP"} for name in ("grpc", "http", "metrics")]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": spec.metadata(),
        "spec": {
            "podSelector": {"matchLabels": dict(spec.labels)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers or [{"podSelector": {}}], "ports": ports}],
        },
    }


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


def render_manifests(spec: DeploymentSpec) -> dict[str, list[Manifest]]:
    """Manifests by file name: the plain Kubernetes set and, apart, KServe's InferenceService."""
    return {
        "deployment.yaml": [_deployment(spec)],
        "service.yaml": _services(spec),
        "network-policy.yaml": [_network_policy(spec)],
        "autoscaler.yaml": [_autoscaler(spec), _adapter_config(spec)],
        "kserve-inferenceservice.yaml": [inference_service(spec)],
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
