"""``radserve deploy render``: manifests validated offline against the Kubernetes and KServe schemas.

Kubernetes' schemas come with ``kubernetes-validate`` (strict: unknown fields fail); KServe's
InferenceService schema is vendored from the v0.20.0 CRD (tests/schemas/README.md), tightened the
way the API server's strict field validation treats unknown fields. No cluster runs here.
"""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from radserve.server_config.kubernetes_manifests import (
    QUEUE_METRIC,
    DeploymentSpec,
    adapter_rule,
    render_manifests,
    to_yaml,
)
from radserve.server_config.triton import TritonServer

KUBERNETES_VERSION = "1.30"
SCHEMAS = Path(__file__).parent / "schemas"
EXAMPLE = Path(__file__).parent.parent / "server_config" / "kubernetes" / "demo-gpu"

SPECS = [
    DeploymentSpec("demo", replicas=2, gpu=True),
    DeploymentSpec("demo", replicas=1, repository="s3://bucket/models"),
    DeploymentSpec(
        "resnet18_int8", replicas=3, gpu=True, repository="pvc://models/radserve",
        restricted_api_secret="radserve-admin", tls_secret="radserve-tls", max_replicas=10,
    ),
]  # fmt: skip


def _closed(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever the CRD lists the known ones."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


@pytest.fixture(scope="module")
def kserve_validator() -> jsonschema.Draft7Validator:
    with gzip.open(SCHEMAS / "kserve-v0.20.0-inferenceservice-v1beta1.schema.json.gz") as stream:
        schema = json.load(stream)
    return jsonschema.Draft7Validator(_closed(schema))


def _kinds(spec: DeploymentSpec) -> dict[str, dict[str, Any]]:
    return {
        f"{manifest['kind']}/{manifest['metadata']['name']}": manifest
        for manifests in render_manifests(spec).values()
        for manifest in manifests
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: f"{spec.model}-{spec.replicas}")
def test_manifests_validate_offline(
    spec: DeploymentSpec, kserve_validator: jsonschema.Draft7Validator
) -> None:
    manifests = _kinds(spec)
    assert {name.split("/")[0] for name in manifests} == {
        "Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "InferenceService",
    }  # fmt: skip
    for name, manifest in manifests.items():
        # YAML round trip: what kubectl would read from the rendered files.
        manifest = yaml.safe_load(to_yaml([manifest]))
        if manifest["kind"] == "InferenceService":
            errors = [error.message for error in kserve_validator.iter_errors(manifest)]
            assert not errors, f"{name}: {errors}"
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_validators_refuse_unknown_fields(kserve_validator: jsonschema.Draft7Validator) -> None:
    manifests = _kinds(SPECS[0])
    deployment = copy.deepcopy(manifests["Deployment/radserve-demo"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    service = copy.deepcopy(manifests["InferenceService/radserve-demo-kserve"])
    service["spec"]["predictor"]["model"]["storageURI"] = "pvc://x/"
    assert not kserve_validator.is_valid(service)


def test_deployment_probes_gpu_security_and_scrape() -> None:
    spec = SPECS[2]
    deployment = _kinds(spec)["Deployment/radserve-resnet18-int8"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--grpc-use-ssl=true" in container["args"]
    restricted = [arg for arg in container["args"] if arg.startswith("--grpc-restricted-protocol=")]
    assert restricted and "inference" not in restricted[0] and "health" not in restricted[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    hpa = _kinds(spec)["HorizontalPodAutoscaler/radserve-resnet18-int8"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert (
        hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        == QUEUE_METRIC
        == adapter_rule(spec)["name"]["as"]
    )


def test_probe_paths_answer_on_the_real_tritonserver(triton: TritonServer) -> None:
    container = _kinds(SPECS[0])["Deployment/radserve-demo"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        with urllib.request.urlopen(
            triton.http_url + container[probe]["httpGet"]["path"], timeout=5
        ) as answer:
            assert answer.status == 200


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (make test)")
def test_adapter_query_is_valid_promql(tmp_path: Path) -> None:
    query = adapter_rule(SPECS[0])["metricsQuery"]
    expression = query.replace("<<.LabelMatchers>>", 'model="demo",pod="p"').replace("<<.GroupBy>>", "pod")
    rules = {"groups": [{"name": "adapter", "rules": [{"record": QUEUE_METRIC, "expr": expression}]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_committed_example_is_what_render_writes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "radserve", "deploy", "render", "--model", "demo", "--replicas", "2", "--gpu",
         "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert rendered == {path.name: path.read_text() for path in EXAMPLE.iterdir()}
