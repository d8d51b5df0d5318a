"""The ``radserve`` command line: synth, train, export, serve, classify.

Exit codes: 0 success; 1 the run finished but some inputs failed; 2 the command could not run
(bad arguments, server unreachable, export refused).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from client.errors import RadserveError
from client.model_card import ModelCard
from server_config.settings import SETTINGS

LOGGER = logging.getLogger("radserve")

EXIT_OK, EXIT_INPUT_FAILURES, EXIT_FAILURE = 0, 1, 2


def _synth(args: argparse.Namespace) -> int:
    from client.dicom.synthetic import write_synthetic_set

    matrix = tuple(args.matrix) if args.matrix else None
    records = write_synthetic_set(
        args.out_dir, args.count, seed=args.seed, matrix=matrix, compressed_share=args.compressed_share
    )
    syntaxes = sorted({record.transfer_syntax for record in records})
    print(
        f"wrote {len(records)} synthetic radiographs to {args.out_dir} "
        f"(transfer syntaxes: {', '.join(syntaxes)})"
    )
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from export.train import TrainingPlan, train

    plan = TrainingPlan(
        architecture=args.arch,
        input_size=args.input_size,
        train_images=args.images,
        held_out_images=args.held_out,
        epochs=args.epochs,
        seed=args.seed,
    )
    report = train(plan, args.output)
    print(
        f"saved {args.output}: {report.architecture}, held-out accuracy {report.held_out_accuracy:.1%} "
        f"on {report.held_out_images} images, {report.seconds:.0f} s"
    )
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from export.model_config import ServingOptions
    from export.pipeline import EngineOptions, ExportRequest, export_checkpoint
    from export.sources import ProgramMetadata

    program = None
    if args.labels is not None or args.input_size is not None:
        if args.labels is None or args.input_size is None:
            raise RadserveError("a TorchScript or .pt2 model needs both --labels and --input-size")
        program = ProgramMetadata(
            labels_file=args.labels,
            input_size=tuple(args.input_size),
            resize=args.resize,
            mean=tuple(args.mean),
            std=tuple(args.std),
            temperature=args.temperature,
        )
    batching = SETTINGS.batching
    if args.max_batch_size is not None:
        batching = replace(batching, max_batch_size=args.max_batch_size)
    options = ServingOptions(batching=batching, tensorrt_accelerator=args.trt_accelerator)
    result = export_checkpoint(
        ExportRequest(
            checkpoint=args.checkpoint,
            name=args.name,
            repository=args.repository,
            target="tensorrt" if args.engine else args.target,
            samples=args.samples,
            sample_folder=args.samples_from,
            min_top1_agreement=args.min_top1,
            max_abs_diff=args.max_abs_diff,
            options=options,
            precisions=tuple(dict.fromkeys(args.precision)),
            calibration_samples=args.calibration_samples,
            program=program,
            keep_versions=args.keep_versions,
            engine=EngineOptions(
                workspace_bytes=int(args.workspace_gib * (1 << 30)),
                timing_cache=args.timing_cache,
                hardware_compatible=args.hardware_compatible,
                version_compatible=args.version_compatible,
            ),
            work_dir=args.work_dir,
            int8_scheme=args.int8_scheme,
        )
    )
    for variant in result.variants:
        parity = variant.parity
        print(
            f"published {variant.version_dir} ({variant.card.architecture}, {variant.precision}); parity vs "
            f"{parity.reference} on {parity.samples} samples: top-1 {parity.top1_agreement:.1%}, "
            f"max abs diff {parity.max_abs_diff:.2e}, max rel diff {parity.max_rel_diff:.2e}"
        )
    return EXIT_OK


def _repo_check(args: argparse.Namespace) -> int:
    from export.repo_check import check_repository

    report = check_repository(args.repository)
    print(report.render())
    return EXIT_OK if report.ok else EXIT_FAILURE


def _serve(args: argparse.Namespace) -> int:
    from server_config.settings import Ports
    from server_config.triton import TritonServer

    server = TritonServer(
        args.repository,
        host=args.host,
        ports=Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        verbose=args.log_verbose,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(
            f"tritonserver ready (pid {server.pid}), repository {args.repository}\n"
            f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
            f"  log     {server.log_file}\nCtrl-C to stop.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not server.is_running():
                print(f"tritonserver exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
                return EXIT_FAILURE
        print("stopping tritonserver ...", flush=True)
    return EXIT_OK


def _preprocess(args: argparse.Namespace) -> int:
    from client.preprocess import write_model_inputs

    if args.output.suffix.lower() not in (".png", ".npy"):
        print(f"radserve preprocess: {args.output}: output must end in .png or .npy", file=sys.stderr)
        return EXIT_FAILURE
    if args.repository is not None:
        card = ModelCard.from_repository(args.repository, args.model)
    else:
        card = asyncio.run(_card_from_server(args.url, args.model))
    for written in write_model_inputs(args.file, card, args.output):
        print(f"wrote {written}: uint8 [1, {card.input_size[0]}, {card.input_size[1]}] ({card.resize})")
    return EXIT_OK


async def _card_from_server(url: str, model: str) -> ModelCard:
    from client.grpc_client import AsyncRadiographClient

    async with AsyncRadiographClient(url) as client:
        await client.wait_ready(model)
        return await client.model_card(model)


def _classify(args: argparse.Namespace) -> int:
    return _run_classify(args, args.url)


def _demo(args: argparse.Namespace) -> int:
    from server_config.triton import TritonServer, free_ports
    from server_config.triton_metrics import model_counters

    with TritonServer(args.repository, ports=free_ports()) as server:
        print(f"tritonserver ready on {server.grpc_url} (repository {args.repository})", flush=True)
        before = model_counters(server.metrics_url, args.model)
        code = _run_classify(args, server.grpc_url)
        served = model_counters(server.metrics_url, args.model) - before
        print(
            f"server: {served.inferences:.0f} inferences in {served.executions:.0f} batches, "
            f"average batch size {served.average_batch_size:.2f}"
        )
    return code


def _run_classify(args: argparse.Namespace, url: str) -> int:
    from client.classify import ClassifyOptions, classify
    from client.inputs import discover
    from client.metrics import ClientMetrics
    from client.progress import Progress
    from client.report import print_rows, print_summary
    from client.results import ResultRow, ResultWriter, completed_paths

    inputs = discover(args.paths)
    if inputs.sidecars:
        print(
            f"left out {len(inputs.sidecars)} side file(s) in the folders (e.g. {inputs.sidecars[0]})",
            file=sys.stderr,
        )
    files = inputs.files
    if args.resume:
        if args.output is None:
            print("radserve: --resume needs --output", file=sys.stderr)
            return EXIT_FAILURE
        done = completed_paths(args.output)
        files = tuple(path for path in files if str(path) not in done)
        print(
            f"resuming: {len(inputs.files) - len(files)} of {len(inputs.files)} files already done",
            file=sys.stderr,
        )
    shown: list[ResultRow] = []
    writer = ResultWriter(args.output, append=args.resume) if args.output else None
    progress = Progress(len(files))

    def on_rows(rows: list[ResultRow]) -> None:
        if writer is not None:
            writer.write(rows)
        shown.extend(rows[: max(0, args.show - len(shown))])
        for row in rows:
            progress.update(row)

    metrics = ClientMetrics()
    if args.metrics_port is not None:
        port = metrics.serve(args.metrics_port)
        print(f"client metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    options = ClassifyOptions(
        url=url.split(","),
        max_in_flight=args.max_in_flight,
        workers=args.workers,
        sr_dir=args.sr_dir,
        metrics=metrics,
    )
    try:
        summary = asyncio.run(classify(files, args.model, on_rows, options))
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        if args.metrics_file is not None:
            metrics.write_textfile(args.metrics_file)
        metrics.stop_serving()
    if not args.quiet:
        print_rows(shown, total=summary.radiographs + summary.errors)
    print_summary(summary, args.model)
    return EXIT_INPUT_FAILURES if summary.errors else EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from loadtests import bench

    return bench.main(args)


def _tune(args: argparse.Namespace) -> int:
    from loadtests import tune

    return tune.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radserve", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write synthetic projection radiographs (DICOM)")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--count", type=int, default=20)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--matrix", type=int, nargs=2, metavar=("ROWS", "COLUMNS"), help="fixed matrix size")
    synth.add_argument("--compressed-share", type=float, default=0.25)
    synth.set_defaults(run=_synth)

    train = commands.add_parser("train", help="train the demo classifier on synthetic radiographs")
    train.add_argument("--output", type=Path, default=Path("build/demo-resnet18.pt"))
    train.add_argument("--arch", default="resnet18")
    train.add_argument("--input-size", type=int, default=224)
    train.add_argument("--images", type=int, default=600)
    train.add_argument("--held-out", type=int, default=150)
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(run=_train)

    export = commands.add_parser("export", help="export a checkpoint into a Triton model repository")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--name", required=True, help="model name in the repository")
    export.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    export.add_argument("--target", choices=("embedded", "onnxruntime", "tensorrt"), default="embedded")
    export.add_argument("--samples", type=int, default=32, help="radiographs for the parity check")
    export.add_argument("--samples-from", type=Path, help="folder of DICOM files for the parity check")
    export.add_argument(
        "--min-top1",
        type=float,
        help="required top-1 agreement with PyTorch fp32 (default 1.0 for fp32, 0.99 for fp16/int8)",
    )
    export.add_argument("--max-abs-diff", type=float, help="allowed max abs probability difference")
    export.add_argument(
        "--precision",
        nargs="+",
        choices=("fp32", "fp16", "int8"),
        default=["fp32"],
        help="variants to publish side by side: NAME (fp32), NAME_fp16, NAME_int8",
    )
    export.add_argument("--calibration-samples", type=int, default=64, help="radiographs for int8")
    export.add_argument(
        "--int8-scheme",
        choices=("auto", "s8s8", "u8s8"),
        default="auto",
        help="int8 activations: s8s8 for TensorRT, u8s8 for ONNX Runtime on CPU (auto: by target)",
    )
    export.add_argument("--keep-versions", type=int, help="keep only the newest N versions on disk")
    export.add_argument("--max-batch-size", type=int, help="Triton max_batch_size (TensorRT profile max)")
    export.add_argument("--labels", type=Path, help="labels.txt of a TorchScript or .pt2 model")
    export.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="input size of a TorchScript/.pt2 model"
    )
    export.add_argument("--resize", choices=("letterbox", "stretch"), default="stretch")
    export.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406])
    export.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225])
    export.add_argument("--temperature", type=float, default=1.0)
    export.add_argument(
        "--trt-accelerator", action="store_true", help="onnxruntime target: TensorRT execution accelerator"
    )
    export.add_argument("--engine", action="store_true", help="build a TensorRT plan (= --target tensorrt)")
    export.add_argument("--workspace-gib", type=float, default=2.0, help="TensorRT builder workspace")
    export.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, loaded and saved")
    export.add_argument("--hardware-compatible", action="store_true", help="TensorRT plan for Ampere+")
    export.add_argument("--version-compatible", action="store_true", help="TensorRT version-compatible plan")
    export.add_argument("--work-dir", type=Path, help="keep the gated ONNX (and plans) in this folder")
    export.set_defaults(run=_export)

    repo = commands.add_parser("repo", help="model repository tools")
    repo_commands = repo.add_subparsers(dest="repo_command", required=True)
    repo_check = repo_commands.add_parser("check", help="validate a model repository (exit 0 ok, 2 not)")
    repo_check.add_argument("repository", type=Path)
    repo_check.set_defaults(run=_repo_check)

    serve = commands.add_parser("serve", help="run the embedded tritonserver until Ctrl-C")
    serve.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    serve.add_argument("--host", default=SETTINGS.host)
    serve.add_argument("--http-port", type=int, default=SETTINGS.ports.http)
    serve.add_argument("--grpc-port", type=int, default=SETTINGS.ports.grpc)
    serve.add_argument("--metrics-port", type=int, default=SETTINGS.ports.metrics)
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.set_defaults(run=_serve)

    preprocess = commands.add_parser("preprocess", help="write the tensor a model receives for a file")
    preprocess.add_argument("file", type=Path)
    preprocess.add_argument("--model", required=True)
    preprocess.add_argument("--output", type=Path, required=True, help="OUT.png or OUT.npy")
    preprocess.add_argument("--url", default=SETTINGS.grpc_url, help="read the model card from this server")
    preprocess.add_argument("--repository", type=Path, help="or from this model repository")
    preprocess.set_defaults(run=_preprocess)

    from loadtests.bench import add_arguments as add_bench_arguments
    from loadtests.tune import add_arguments as add_tune_arguments

    bench = commands.add_parser("bench", help="raw engine vs served vs naive baseline vs end-to-end")
    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    tune = commands.add_parser("tune", help="sweep batching/instances/threads against a p95 budget")
    add_tune_arguments(tune)
    tune.set_defaults(run=_tune)

    classify = commands.add_parser("classify", help="classify DICOM files and folders")
    classify.add_argument(
        "--url",
        default=SETTINGS.grpc_url,
        help="Triton gRPC HOST:PORT; several, comma-separated, are balanced",
    )
    classify.set_defaults(run=_classify)
    demo = commands.add_parser("demo", help="start the embedded server, classify, print, stop")
    demo.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    demo.set_defaults(run=_demo)
    for command in (classify, demo):
        command.add_argument("paths", nargs="+", help="DICOM files and folders")
        command.add_argument("--model", required=True)
        command.add_argument("--output", type=Path, help="results file, .jsonl or .csv")
        command.add_argument("--max-in-flight", type=int, default=SETTINGS.client_max_in_flight)
        command.add_argument(
            "--workers", type=int, default=SETTINGS.client_decode_workers, help="decoding processes"
        )
        command.add_argument("--show", type=int, default=50, help="print at most this many rows")
        command.add_argument("-q", "--quiet", action="store_true", help="print the summary only")
        command.add_argument("--resume", action="store_true", help="skip inputs already in --output")
        command.add_argument("--sr-dir", type=Path, help="write a DICOM Comprehensive SR per radiograph here")
        command.add_argument(
            "--metrics-port", type=int, help="expose the client's Prometheus metrics on 127.0.0.1:PORT"
        )
        command.add_argument(
            "--metrics-file", type=Path, help="write the metrics at the end as a node_exporter textfile"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except RadserveError as error:
        print(f"radserve {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
