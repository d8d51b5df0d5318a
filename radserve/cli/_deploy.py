"""``radserve deploy render`` (Kubernetes and KServe manifests) and ``radserve deploy nginx``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radserve.cli._common import EXIT_OK


def _render(args: argparse.Namespace) -> int:
    from radserve.server_config.kubernetes_manifests import DeploymentSpec, render_manifests, to_yaml
    from radserve.server_config.kubernetes_spec import instance_kinds

    kinds = instance_kinds(args.model_config) if args.model_config else frozenset()
    spec = DeploymentSpec(
        model=args.model,
        replicas=args.replicas,
        gpu=args.gpu,
        namespace=args.namespace,
        repository=args.repository,
        max_replicas=args.max_replicas,
        queue_target_ms=args.queue_target_ms,
        restricted_api_secret=args.restricted_api_secret,
        tls_secret=args.tls_secret,
        client_ca_secret=args.client_ca_secret,
        model_control=args.model_control,
        ingress_namespaces=tuple(args.ingress_namespace),
        ingress_pod_labels=tuple(args.ingress_pod_label),
        drain_seconds=args.drain_seconds,
        instance_kinds=kinds,
    )
    files = render_manifests(spec)
    if args.output is None:
        sys.stdout.write("---\n".join(to_yaml(manifests) for manifests in files.values()))
        return EXIT_OK
    args.output.mkdir(parents=True, exist_ok=True)
    for name, manifests in files.items():
        (args.output / name).write_text(to_yaml(manifests), encoding="utf-8")
        print(f"wrote {args.output / name}", file=sys.stderr)
    return EXIT_OK


def _nginx(args: argparse.Namespace) -> int:
    from radserve.server_config.load_balancer import NginxConfig, render_nginx_config

    config = NginxConfig(
        args.replica,
        args.listen,
        args.prefix,
        tls_certificate=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
        upstream_ca=args.upstream_ca,
        upstream_server_name=args.upstream_server_name,
        upstream_certificate=args.upstream_cert,
        upstream_key=args.upstream_key,
        admin_rpcs=args.admin_rpcs,
    )
    sys.stdout.write(render_nginx_config(config))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser(
        "deploy", help="render Kubernetes/KServe manifests or an nginx configuration"
    )
    verbs = deploy.add_subparsers(dest="deploy_command", required=True)

    render = verbs.add_parser(
        "render", help="Deployment, Services, HPA + adapter rule, KServe InferenceService"
    )
    render.add_argument("--model", required=True)
    render.add_argument("--replicas", type=int, default=1, help="replicas (the HPA's minimum)")
    render.add_argument("--gpu", action="store_true", help="one NVIDIA GPU per replica")
    render.add_argument("--namespace", default="radserve")
    render.add_argument(
        "--repository",
        default="pvc://radserve-model-repository",
        help="pvc://CLAIM[/PATH] or s3://, gs://, as:// (credentials: Secret radserve-object-storage)",
    )
    render.add_argument(
        "--max-replicas", type=int, default=0, help="HPA ceiling (default: 4 times --replicas)"
    )
    render.add_argument(
        "--queue-target-ms", type=float, default=20.0, help="average queue time per request the HPA holds"
    )
    render.add_argument(
        "--restricted-api-secret", default="", help="Secret (key admin-key) guarding Triton's admin APIs"
    )
    render.add_argument("--tls-secret", default="", help="kubernetes.io/tls Secret: serve gRPC over TLS")
    render.add_argument(
        "--client-ca-secret", default="", help="Secret (key ca.crt): mutual TLS, clients signed by that CA"
    )
    render.add_argument(
        "--model-control",
        choices=("none", "explicit"),
        default="none",
        help="explicit: load/unload through the model-repository API (needs --restricted-api-secret)",
    )
    render.add_argument(
        "--ingress-namespace", action="append", default=[], help="namespace admitted (repeat)"
    )
    render.add_argument(
        "--ingress-pod-label", action="append", default=[], help="KEY=VALUE of pods admitted (repeat)"
    )
    render.add_argument(
        "--drain-seconds", type=int, default=15, help="preStop: s serving on while endpoints drop the pod"
    )
    render.add_argument(
        "--model-config", type=Path, help="the model's config.pbtxt: refuse an instance kind the pod lacks"
    )
    render.add_argument("--output", type=Path, help="write one file per kind here (default: stdout)")
    render.set_defaults(run=_render)

    nginx = verbs.add_parser("nginx", help="nginx configuration balancing gRPC over tritonserver replicas")
    nginx.add_argument("--replica", action="append", required=True, help="HOST:PORT, repeated")
    nginx.add_argument("--listen", default="127.0.0.1:8001", help="HOST:PORT nginx listens on")
    nginx.add_argument("--prefix", type=Path, default=Path("/var/lib/radserve-nginx"), help="pid, logs, temp")
    nginx.add_argument("--tls-cert", type=Path, help="terminate TLS with this certificate (PEM)")
    nginx.add_argument("--tls-key", type=Path, help="and its key (PEM)")
    nginx.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --listen without TLS (trusted network)"
    )
    nginx.add_argument("--upstream-ca", type=Path, help="replicas serve TLS signed by this CA: verify it")
    nginx.add_argument(
        "--upstream-server-name", default="localhost", help="the name the replicas' certificates carry"
    )
    nginx.add_argument("--upstream-cert", type=Path, help="client certificate for replicas with mutual TLS")
    nginx.add_argument("--upstream-key", type=Path, help="and its key")
    nginx.add_argument("--admin-rpcs", action="store_true", help="proxy Triton's admin RPCs too")
    nginx.set_defaults(run=_nginx)
