"""``radserve listen``: a DICOM Storage SCP that classifies every instance it receives."""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from pathlib import Path

from radserve.cli._common import (
    EXIT_OK,
    add_connection_arguments,
    add_privacy_arguments,
    connection_of,
    pseudonyms_of,
)
from radserve.errors import ConfigurationError
from radserve.settings import SETTINGS
from radserve.transport import is_loopback


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.dicom_tls_cert is None:
        if args.dicom_tls_ca is not None:
            raise ConfigurationError(
                "--dicom-tls-ca needs --dicom-tls-cert and --dicom-tls-key (the listener's certificate)"
            )
        if not args.insecure and not is_loopback(args.host):
            raise ConfigurationError(
                f"refusing to listen on {args.host} without DICOM TLS: radiographs would cross the network "
                "in clear text. Give --dicom-tls-cert and --dicom-tls-key (and --dicom-tls-ca for mutual "
                "TLS), or --insecure on a network you trust"
            )
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.dicom_tls_cert, args.dicom_tls_key)
    if args.dicom_tls_ca is not None:  # mutual TLS: callers must present a certificate from this CA
        context.load_verify_locations(args.dicom_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _report_ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """TLS to the SR destination, or None without ``--dicom-tls-forward``.

    The destination is verified with --dicom-tls-ca (else the system's CAs); the listener's
    --dicom-tls-cert is presented.
    """
    if not args.dicom_tls_forward:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.dicom_tls_ca)
    if args.dicom_tls_cert is not None:
        context.load_cert_chain(args.dicom_tls_cert, args.dicom_tls_key)
    return context


def _listen(args: argparse.Namespace) -> int:
    from radserve.client.classify import ClassifyOptions
    from radserve.client.listen import Destination, Listener, ListenerMetrics, ListenOptions

    destination = Destination.parse(args.sr_destination) if args.sr_destination else None
    sr_dir = args.sr_dir or (args.spool.parent / f"{args.spool.name}-reports" if destination else None)
    if args.pseudonymize_uids is not None and args.pseudonymize_paths is None:
        raise ConfigurationError(
            "--pseudonymize-uids needs --pseudonymize-paths here: the spool names each instance by its "
            "SOP Instance UID, and rows carry spool paths"
        )
    # Every path the listener can name lies below the spool or the SR folder.
    pseudonyms = pseudonyms_of(args, folders=[args.spool, *([sr_dir] if sr_dir else [])])
    metrics = ListenerMetrics()
    options = ListenOptions(
        model=args.model,
        output=args.output,
        spool=args.spool,
        host=args.host,
        port=args.port,
        ae_title=args.ae_title,
        max_queue=args.max_queue,
        allowed_calling=tuple(title for title in args.allowed_calling.split(",") if title),
        ssl_context=_ssl_context(args),
        classify=ClassifyOptions(
            max_in_flight=args.max_in_flight, workers=args.workers, sr_dir=sr_dir
        ).with_connection(connection_of(args)),
        report_destination=destination,
        report_ssl_context=_report_ssl_context(args),
        audit_log=args.audit_log,
        pseudonyms=pseudonyms,
        studies=args.studies,
        study_quiet_seconds=args.study_quiet_seconds,
    )
    listener = Listener(options, metrics)
    signal.signal(signal.SIGTERM, lambda *_: listener.stop())
    if args.metrics_port is not None:
        port = metrics.serve(args.metrics_port)
        print(f"listener metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    try:
        listener.run()
    except KeyboardInterrupt:
        listener.stop()
    finally:
        metrics.stop_serving()
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    listen = commands.add_parser(
        "listen", help="receive DICOM by C-STORE (a Storage SCP) and classify each instance"
    )
    listen.add_argument("--model", required=True)
    listen.add_argument("--output", type=Path, required=True, help="results file, .jsonl or .csv (appended)")
    listen.add_argument("--ae-title", default=SETTINGS.listen.ae_title, help="the listener's AE title")
    listen.add_argument("--host", default=SETTINGS.host, help="address to listen on (0.0.0.0: all)")
    listen.add_argument("--port", type=int, default=SETTINGS.listen.port, help="DICOM port")
    listen.add_argument("--spool", type=Path, default=Path(SETTINGS.listen.spool))
    queue_help = "instances waiting at most; beyond, C-STORE answers 0xA700 (out of resources)"
    listen.add_argument("--max-queue", type=int, default=SETTINGS.listen.max_queue, help=queue_help)
    listen.add_argument(
        "--allowed-calling", default="", help="comma-separated calling AE titles admitted (default: any)"
    )
    listen.add_argument("--max-in-flight", type=int, default=SETTINGS.client.max_in_flight)
    listen.add_argument("--workers", type=int, default=SETTINGS.client.decode_workers)
    listen.add_argument("--sr-dir", type=Path, help="write a DICOM Comprehensive SR per radiograph here")
    listen.add_argument(
        "--sr-destination", help="forward each SR by C-STORE to AE_TITLE@HOST:PORT (removed once stored)"
    )
    dicom_tls = listen.add_argument_group("DICOM over TLS (the storage side; --tls-* are Triton's)")
    dicom_tls.add_argument("--dicom-tls-cert", type=Path, help="the listener's certificate (PEM)")
    dicom_tls.add_argument("--dicom-tls-key", type=Path, help="its private key (PEM)")
    dicom_tls.add_argument(
        "--dicom-tls-ca", type=Path, help="require callers' certificates from this CA (PEM)"
    )
    add_connection_arguments(listen)
    listen.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without DICOM TLS"
    )
    listen.add_argument(
        "--dicom-tls-forward",
        action="store_true",
        help="forward SRs over DICOM TLS: the destination verified by --dicom-tls-ca (else the system "
        "CAs), --dicom-tls-cert/--dicom-tls-key presented",
    )
    listen.add_argument(
        "--audit-log", type=Path, help="append an audit trail (JSON lines: associations, SR forwarding) here"
    )
    listen.add_argument(
        "--metrics-port", type=int, help="expose the listener's Prometheus metrics on 127.0.0.1:PORT"
    )
    listen.add_argument(
        "--studies",
        action="store_true",
        help="a study-level model (MRI): take MR Image Storage, group instances by Study Instance UID and "
        "classify each study once quiet (one row per study, the rules of classify-series)",
    )
    listen.add_argument(
        "--study-quiet-seconds",
        type=float,
        default=SETTINGS.listen.study_quiet_seconds,
        help="with --studies: classify a study once no instance of it arrived for this long",
    )
    add_privacy_arguments(listen)
    listen.set_defaults(run=_listen)
