"""KServe's ``InferenceService`` for one model: the repository on KServe's ``kserve-tritonserver``
runtime, pinned to the Triton release the repository was built for, secured and drained like the
Deployment (:mod:`radserve.server_config.kubernetes_spec`).

KServe merges the model's container into the runtime's: args are appended to the runtime's
(``tritonserver --model-store=/mnt/models --grpc-port=9000 --http-port=8080 ...``) and resources are
merged key by key, the model's winning (docs/how-to/kubernetes.md, "KServe").
"""

from __future__ import annotations

from typing import Any

from radserve.server_config.kubernetes_spec import (
    CONTAINER_SECURITY,
    POD_SECURITY,
    DeploymentSpec,
    environment,
    pre_stop,
    resources,
    secret_volumes,
    triton_options,
)

__all__ = ["KSERVE_GRPC_PORT", "inference_service", "runtime_version"]

Manifest = dict[str, Any]

KSERVE_GRPC_PORT = 9000  # the kserve-tritonserver runtime's --grpc-port


def runtime_version(image: str) -> str:
    """KServe's ``runtimeVersion`` for a Triton image: its tag (the runtime's image is
    ``nvcr.io/nvidia/tritonserver:<runtimeVersion>``; left unset, KServe v0.20 runs 23.05)."""
    return image.rpartition(":")[2]


def inference_service(spec: DeploymentSpec) -> Manifest:
    """The InferenceService of ``spec`` (RawDeployment, v2 protocol over gRPC)."""
    storage = spec.repository if not spec.on_volume else spec.repository.rstrip("/") + "/"
    env, env_from = environment(spec)
    volumes, mounts = secret_volumes(spec)
    model: Manifest = {
        "modelFormat": {"name": "triton"},
        "runtime": "kserve-tritonserver",
        "runtimeVersion": runtime_version(spec.image),
        "protocolVersion": "v2",
        "storageUri": storage,
        "args": triton_options(spec),
        "ports": [{"name": "h2c", "containerPort": KSERVE_GRPC_PORT, "protocol": "TCP"}],
        # The runtime's limits (cpu "1", memory "2Gi") would merge in under these requests.
        "resources": resources(spec, cpu_limit=True),
        "lifecycle": pre_stop(spec),
        "securityContext": dict(CONTAINER_SECURITY),
    }
    model |= {"env": env} if env else {}
    model |= {"envFrom": env_from} if env_from else {}
    model |= {"volumeMounts": mounts} if mounts else {}
    predictor: Manifest = {
        "minReplicas": spec.replicas,
        "maxReplicas": spec.max_replicas or 4 * spec.replicas,
        "automountServiceAccountToken": False,
        "securityContext": dict(POD_SECURITY),
        "terminationGracePeriodSeconds": spec.grace_seconds,
        "model": model,
    }
    predictor |= {"volumes": volumes} if volumes else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": spec.metadata("-kserve")
        | {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
        "spec": {"predictor": predictor},
    }
