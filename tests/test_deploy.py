"""``radserve deploy render``: manifests validated offline against the Kubernetes and KServe schemas.

Kubernetes' schemas come with ``kubernetes-validate`` (strict: unknown fields fail); KServe's
InferenceService schema is vendored from the v0.20.0 CRD (tests/schemas/README.md), tightened the
way the API server's strict field validation treats unknown fields. No cluster runs here.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from radserve.errors import ConfigurationError, ServerError
from radserve.server_config.kserve_manifest import runtime_version
from radserve.server_config.kubernetes_manifests import (
    QUEUE_METRIC,
    DeploymentSpec,
    adapter_rule,
    render_manifests,
    to_yaml,
)
from radserve.server_config.kubernetes_spec import TRITON_IMAGE, instance_kinds
from radserve.server_config.serving_view import build_serving_view
from radserve.server_config.triton import TritonServer, free_ports
from radserve.server_config.triton_security import ServerTls
from radserve.settings import Ports
from radserve.synthetic.dataset import SyntheticRecord
from radserve.transport import ADMIN_KEY_HEADER
from tests._certificates import CertificateAuthority

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
    DeploymentSpec(
        "demo", repository="gs://bucket/models", restricted_api_secret="radserve-admin",
        tls_secret="radserve-tls", client_ca_secret="radserve-client-ca", model_control="explicit",
        ingress_namespaces=("radiology", "monitoring"), ingress_pod_labels=("app=radserve-listener",),
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


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.model}-{spec.replicas}-{spec.repository[:2]}"
)
def test_manifests_validate_offline(
    spec: DeploymentSpec, kserve_validator: jsonschema.Draft7Validator
) -> None:
    manifests = _kinds(spec)
    assert {name.split("/")[0] for name in manifests} == {
        "Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler", "ConfigMap", "InferenceService",
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


# Pod Security Standards, https://kubernetes.io/docs/concepts/security/pod-security-standards/
# ("Baseline" and "Restricted" policies, v1.30): the controls a pod template must meet.
_PSS_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip


def _pod_security_violations(pod: dict[str, Any], containers: list[dict[str, Any]]) -> list[str]:
    """What the "restricted" profile refuses in a pod spec and its containers."""
    found = [f"{key} is set" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _PSS_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {kinds - _PSS_VOLUME_TYPES} not allowed")
    pod_context = pod.get("securityContext", {})
    for container in containers:
        context = container.get("securityContext", {})
        name = container.get("name", "model")
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities beyond NET_BIND_SERVICE")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if 0 in (context.get("runAsUser"), pod_context.get("runAsUser")):
            found.append(f"{name}: runs as user 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            found.append(f"{name}: hostPort")
    return found


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.model}-{spec.replicas}-{spec.repository[:2]}"
)
def test_pod_templates_meet_pod_security_restricted(spec: DeploymentSpec) -> None:
    manifests = _kinds(spec)
    pod = manifests[f"Deployment/{spec.name}"]["spec"]["template"]["spec"]
    predictor = manifests[f"InferenceService/{spec.name}-kserve"]["spec"]["predictor"]
    for what, (pod_spec, containers) in {
        "Deployment": (pod, pod["containers"]),
        "InferenceService": (predictor, [predictor["model"]]),
    }.items():
        assert _pod_security_violations(pod_spec, containers) == [], what
        assert pod_spec["automountServiceAccountToken"] is False, what
    broken = copy.deepcopy(pod)
    broken["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    broken["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(_pod_security_violations(broken, broken["containers"])) == 2  # the check can fail


def test_render_refuses_what_is_not_safe_or_does_not_fit(triton: TritonServer, repository: Path) -> None:
    with pytest.raises(ConfigurationError, match="restriction Secret"):
        DeploymentSpec("demo", model_control="explicit")  # model loading open to anyone
    with pytest.raises(ConfigurationError, match="restriction Secret"):
        DeploymentSpec("demo", tls_secret="radserve-tls")  # HTTP inference in clear text
    with pytest.raises(ConfigurationError, match="needs --tls-secret"):
        DeploymentSpec("demo", restricted_api_secret="a", client_ca_secret="radserve-ca")
    config = repository / "tiny" / "config.pbtxt"  # the embedded export: CPU instances
    assert instance_kinds(config) == {"KIND_CPU"}
    DeploymentSpec("tiny", instance_kinds=instance_kinds(config))
    done = subprocess.run(
        [sys.executable, "-m", "radserve", "deploy", "render", "--model", "tiny", "--gpu",
         "--model-config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "KIND_CPU instances but the pod is a GPU pod" in done.stderr
    with pytest.raises(ConfigurationError, match="model config"):
        instance_kinds(repository / "missing" / "config.pbtxt")


def test_default_render_serves_no_loading_api() -> None:
    for spec in (DeploymentSpec("demo"), DeploymentSpec("demo", gpu=True, repository="s3://b/m")):
        for manifest in (
            _kinds(spec)[f"Deployment/{spec.name}"],
            _kinds(spec)[f"InferenceService/{spec.name}-kserve"],
        ):
            text = to_yaml([manifest])
            assert "--model-control-mode=none" in text and "explicit" not in text
            assert "--disable-auto-complete-config" in text


def test_drain_outlasts_endpoint_removal_and_tritons_exit() -> None:
    """Kubernetes' pod termination (kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
    #pod-termination): the preStop hook runs first, SIGTERM follows it, and the kubelet kills the
    container when terminationGracePeriodSeconds (counted from the start, preStop included) runs
    out. Endpoints drop the pod in parallel, so serving on through preStop covers their delay."""
    spec = DeploymentSpec("demo", drain_seconds=20)
    for pod, container in (
        (lambda d: (d["spec"]["template"]["spec"], d["spec"]["template"]["spec"]["containers"][0]))(
            _kinds(spec)["Deployment/radserve-demo"]
        ),
        (lambda i: (i["spec"]["predictor"], i["spec"]["predictor"]["model"]))(
            _kinds(spec)["InferenceService/radserve-demo-kserve"]
        ),
    ):
        sleep = container["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep" and int(sleep[1]) == spec.drain_seconds
        exit_timeout = next(
            int(a.split("=")[1]) for a in container["args"] if a.startswith("--exit-timeout-secs=")
        )
        assert pod["terminationGracePeriodSeconds"] > spec.drain_seconds + exit_timeout


# KServe v0.20's ClusterServingRuntime kserve-tritonserver (config/runtimes/kserve-tritonserver.yaml):
# its container's resources, merged under the InferenceService's model container.
_KSERVE_TRITON_RUNTIME_RESOURCES = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}


def _quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for unit, factor in units.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def _merged_with_runtime(model_resources: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """KServe's merge of the model's container into the runtime's (pkg/controller/v1beta1/
    inferenceservice/utils.MergeRuntimeContainers: a strategic merge patch, the InferenceService's
    fields win, maps merged key by key; kserve.github.io/website docs, "Serving Runtimes": "the
    InferenceService's container overrides the runtime's")."""
    return {
        part: _KSERVE_TRITON_RUNTIME_RESOURCES[part] | model_resources.get(part, {})
        for part in ("requests", "limits")
    }


@pytest.mark.parametrize(
    "spec", SPECS, ids=lambda spec: f"{spec.model}-{spec.replicas}-{spec.repository[:2]}"
)
def test_kserve_pins_the_runtime_and_its_resources_hold_after_the_merge(spec: DeploymentSpec) -> None:
    model = _kinds(spec)[f"InferenceService/{spec.name}-kserve"]["spec"]["predictor"]["model"]
    assert model["runtimeVersion"] == runtime_version(TRITON_IMAGE) == TRITON_IMAGE.split(":")[1]
    merged = _merged_with_runtime(model["resources"])
    for name, request in merged["requests"].items():
        limit = merged["limits"].get(name)
        assert limit is None or _quantity(request) <= _quantity(limit), (name, merged)
    # What the merge did to the resources rendered before (requests.cpu 4, no CPU limit): refused.
    old = _merged_with_runtime({"requests": {"cpu": "4"}, "limits": {"memory": "8Gi"}})
    assert _quantity(old["requests"]["cpu"]) > _quantity(old["limits"]["cpu"])


def test_hpa_metric_comes_from_series_triton_exports(triton: TritonServer) -> None:
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as answer:
        exported = {line.split("{")[0] for line in answer.read().decode().splitlines() if line[:1] != "#"}
    query = adapter_rule(SPECS[0])["metricsQuery"] + adapter_rule(SPECS[0])["seriesQuery"]
    used = {
        name for name in ("nv_inference_queue_duration_us", "nv_inference_request_success") if name in query
    }
    assert used == {"nv_inference_queue_duration_us", "nv_inference_request_success"} and used <= exported


def _local_arguments(
    container: dict[str, Any], key: str, files: dict[str, Path], ports: Ports
) -> tuple[str, ...]:
    """The container's Triton options as the kubelet runs them (the Secret's key substituted for
    ``$(RADSERVE_ADMIN_KEY)``, mounted files mapped to local ones), on local loopback ports."""
    local = {"--grpc-port": ports.grpc, "--http-port": ports.http, "--metrics-port": ports.metrics}
    arguments = []
    for argument in container["args"][1:]:  # after "tritonserver"
        argument = argument.replace("$(RADSERVE_ADMIN_KEY)", key)
        for mounted, path in files.items():
            argument = argument.replace(mounted, str(path))
        option = argument.split("=")[0]
        arguments.append(f"{option}={local[option]}" if option in local else argument)
    loopback = ("--grpc-address=127.0.0.1", "--http-address=127.0.0.1", "--metrics-address=127.0.0.1")
    return (*arguments, *loopback)


def _http(server: TritonServer, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(server.http_url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_rendered_restriction_and_mutual_tls_work_with_radserves_client(
    repository: Path,
    tiny_export: object,
    dicom_records: list[SyntheticRecord],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "s3cr3t-from-the-secret"
    spec = DeploymentSpec(
        "tiny", restricted_api_secret="radserve-admin", tls_secret="radserve-tls",
        client_ca_secret="radserve-client-ca", model_control="explicit",
    )  # fmt: skip
    rendered = "".join(to_yaml(manifests) for manifests in render_manifests(spec).values())
    assert key not in rendered and "$(RADSERVE_ADMIN_KEY)" in rendered
    authority = CertificateAuthority(tmp_path)
    server_cert, client = authority.issue("server", server=True), authority.issue("client", server=False)
    files = {
        "/etc/radserve/tls/tls.crt": server_cert.cert,
        "/etc/radserve/tls/tls.key": server_cert.key,
        "/etc/radserve/client-ca/ca.crt": authority.cert,
    }
    container = _kinds(spec)["Deployment/radserve-tiny"]["spec"]["template"]["spec"]["containers"][0]
    ports = free_ports()
    tls = ServerTls(server_cert.cert, server_cert.key, authority.cert)  # HTTP and metrics on loopback
    arguments = _local_arguments(container, key, files, ports)
    caplog.set_level(logging.INFO)
    with TritonServer(repository, ports=ports, tls=tls, admin_key=key, arguments=arguments) as server:
        common = (
            "classify", *(record.path for record in dicom_records[:4]), "--model", "tiny",
            "--url", server.grpc_url, "--tls-ca", str(authority.cert), "--tls-cert", str(client.cert),
            "--tls-key", str(client.key),
        )  # fmt: skip
        output = tmp_path / "rows.jsonl"
        environment = os.environ | {"RADSERVE_CLIENT_READY_TIMEOUT_SECONDS": "5"}
        keyed = subprocess.run(
            [sys.executable, "-m", "radserve", *common, "--admin-key", key, "--output", str(output)],
            capture_output=True, text=True, timeout=300, env=environment,
        )  # fmt: skip
        keyless = subprocess.run(
            [sys.executable, "-m", "radserve", *common, "-q"], capture_output=True, text=True, timeout=300,
            env=environment,
        )  # fmt: skip
        health = _http(server, "GET", "/v2/health/ready")
        http_infer = _http(server, "POST", "/v2/models/tiny/infer")
        http_load = _http(server, "POST", "/v2/repository/models/tiny/load")
        keyed_load = _http(server, "POST", "/v2/repository/models/tiny/load", {ADMIN_KEY_HEADER: key})
    assert keyed.returncode == 0, keyed.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["ok"] * 4
    assert keyless.returncode != 0  # reading the model card is a restricted call
    # Under TLS the plaintext HTTP port answers health only; loading needs the key.
    assert (health, keyed_load) == (200, 200) and http_infer >= 400 and http_load >= 400
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "starting" in logged and "***" in logged and key not in logged
    assert server.log_file is not None and key not in server.log_file.read_text()  # tritonserver's own log


def test_default_render_refuses_model_loading_on_the_real_tritonserver(
    repository: Path, tiny_export: object
) -> None:
    spec = DeploymentSpec("tiny")
    container = _kinds(spec)["Deployment/radserve-tiny"]["spec"]["template"]["spec"]["containers"][0]
    ports = free_ports()
    with TritonServer(
        repository, ports=ports, arguments=_local_arguments(container, "", {}, ports)
    ) as server:
        loaded = _http(server, "POST", "/v2/repository/models/tiny/load")
        unloaded = _http(server, "POST", "/v2/repository/models/tiny/unload")
        ready = _http(server, "GET", "/v2/models/tiny/ready")
    assert loaded >= 400 and unloaded >= 400 and ready == 200


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto's S3-compatible server on loopback, authenticating requests (IAM) after the first three
    unauthenticated actions (creating the user, its policy and its key)."""
    port = free_ports().http
    environment = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    log = (tmp_path / "moto.log").open("wb")
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=environment,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
                break
            except OSError:
                moto.poll()
                assert moto.returncode is None, (tmp_path / "moto.log").read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        moto.terminate()
        moto.wait(10)
        log.close()


def _s3_credentials(endpoint: str) -> dict[str, str]:
    """An IAM user allowed S3, and its key: the Secret's data (AWS_* variables)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")  # fmt: skip
    iam.create_user(UserName="radserve")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="radserve", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="radserve")["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_tritonserver_reads_an_s3_repository_with_the_secrets_credentials(
    repository: Path, tiny_export: object, s3_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    credentials = _s3_credentials(s3_server)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    s3.create_bucket(Bucket="models")
    view = build_serving_view(repository, tmp_path / "view")  # the repository as this host serves it
    for path in sorted(view.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), "models", f"radserve/{path.relative_to(view)}")
    spec = DeploymentSpec("tiny", repository=f"s3://{s3_server}/models/radserve")
    container = _kinds(spec)["Deployment/radserve-tiny"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": spec.object_storage_secret}}]
    ports = free_ports()
    arguments = _local_arguments(container, "", {}, ports)
    for name, value in credentials.items():  # the Secret's data, as envFrom sets it
        monkeypatch.setenv(name, value)
    with TritonServer(repository, ports=ports, arguments=arguments) as server:
        ready = _http(server, "GET", "/v2/models/tiny/ready")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(ServerError):
        TritonServer(repository, ports=free_ports(), arguments=arguments).start(timeout=60)
    assert ready == 200
