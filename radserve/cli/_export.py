"""``radserve export`` and ``radserve repo check``: checkpoint → gated ONNX → model repository."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radserve.cli._common import EXIT_FAILURE, EXIT_OK
from radserve.errors import RadserveError
from radserve.model_card import ModelCard
from radserve.settings import SETTINGS

if TYPE_CHECKING:
    from radserve.export.sources import ProgramMetadata
    from radserve.model_card import InputContract


def _program(args: argparse.Namespace) -> ProgramMetadata | None:
    """What a TorchScript or ``.pt2`` source needs said (labels, input size, ...); None for a checkpoint."""
    from radserve.export.sources import ProgramMetadata

    if args.labels is None and args.input_size is None:
        return None
    if args.labels is None or args.input_size is None:
        raise RadserveError("a TorchScript or .pt2 model needs both --labels and --input-size")
    return ProgramMetadata(
        labels_file=args.labels,
        input_size=tuple(args.input_size),
        resize=args.resize,
        mean=tuple(args.mean),
        std=tuple(args.std),
        temperature=args.temperature,
    )


def _export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from radserve.export.detector import is_detector_checkpoint
    from radserve.export.model_config import ServingOptions
    from radserve.export.pipeline import EngineOptions, ExportRequest, export_checkpoint
    from radserve.export.targets import get_target

    if is_detector_checkpoint(args.checkpoint):
        return _export_detector(args)
    if args.name is None:
        if args.system is None:
            raise RadserveError("--name is required (or --system, whose name is then the model's)")
        args.name = args.system
    program = _program(args)
    target_name = "tensorrt" if args.engine else args.target
    target = get_target(target_name, args.device)
    batching = SETTINGS.batching
    size = target.max_batch_size(batching) if args.max_batch_size is None else args.max_batch_size
    batching = replace(batching, max_batch_size=size)
    options = ServingOptions(
        batching=batching, tensorrt_accelerator=args.trt_accelerator, priority_levels=args.priority_levels
    )
    accepts = _contract(args)
    result = export_checkpoint(
        ExportRequest(
            checkpoint=args.checkpoint,
            name=args.name,
            repository=args.repository,
            target=target_name,
            device=args.device,
            samples=args.samples,
            sample_folder=args.samples_from,
            min_top1_agreement=args.min_top1,
            max_abs_diff=args.max_abs_diff,
            options=options,
            precisions=tuple(dict.fromkeys(args.precision)),
            cpu_engine=args.cpu_engine,
            calibration_samples=args.calibration_samples,
            program=program,
            keep_versions=args.keep_versions,
            engine=EngineOptions(
                workspace_bytes=int(args.workspace_gib * (1 << 30)),
                timing_cache=args.timing_cache,
                hardware_compatible=args.hardware_compatible,
                version_compatible=args.version_compatible,
                optimization_level=args.builder_optimization_level,
            ),
            work_dir=args.work_dir,
            int8_scheme=args.int8_scheme,
            int8_calibration=args.int8_calibration,
            accepts=accepts,
            gradcam=args.gradcam,
            system=args.system,
        )
    )
    for variant in result.variants:
        parity = variant.parity
        print(
            f"published {variant.version_dir} ({variant.card.architecture}, {variant.precision}); parity vs "
            f"{parity.reference} on {parity.samples} samples: top-1 {parity.top1_agreement:.1%}, "
            f"max abs diff {parity.max_abs_diff:.2e}, max rel diff {parity.max_rel_diff:.2e}"
        )
    if result.gradcam_dir is not None:
        figures = ModelCard.read(result.gradcam_dir).parity.gradcam
        assert figures is not None  # the companion is published only with them (export/gradcam.py)
        print(
            f"published {result.gradcam_dir} (Grad-CAM companion); maps vs PyTorch autograd on "
            f"{figures.samples} samples: min Pearson r {figures.min_pearson:.6f}"
        )
    return EXIT_OK


def _export_detector(args: argparse.Namespace) -> int:
    """A detector checkpoint (``radserve train --detector``), published as NAME (default SYSTEM_detector)."""
    import tempfile

    from radserve.export.detector import export_detector
    from radserve.model_card import detector_name

    if args.target != "embedded" or args.engine or args.precision != ["fp32"] or args.gradcam:
        raise RadserveError(
            "a detector is exported fp32 for the embedded target only (ONNX Runtime, NMS inside)"
        )
    name = args.name or detector_name(args.system or "fracture")
    with tempfile.TemporaryDirectory(prefix="radserve-detector-") as temporary:
        result = export_detector(
            args.checkpoint,
            name,
            args.repository,
            args.work_dir or Path(temporary),
            samples=args.samples,
            keep_versions=args.keep_versions,
        )
    parity = result.parity
    print(
        f"published {result.version_dir} ({result.card.architecture}, detector); parity vs "
        f"{parity.reference} on {parity.samples} samples: {parity.matched}/{parity.compared} detections "
        f"with score >= {parity.min_score} matched (worst IoU {parity.min_iou:.5f}, max score diff "
        f"{parity.max_score_diff:.2e})"
    )
    return EXIT_OK


def _contract(args: argparse.Namespace) -> InputContract | None:
    """The input contract the flags set (defaults for the fields not given); None without a flag."""
    from radserve.model_card import InputContract

    given: dict[str, Any] = {
        name: tuple(value)
        for name, value in (
            ("modalities", args.accept_modality),
            ("sop_classes", args.accept_sop_class),
            ("photometric", args.accept_photometric),
            ("body_parts", args.accept_body_part),
            ("view_positions", args.accept_view_position),
        )
        if value is not None
    }
    if args.accept_for_processing:
        given["for_processing"] = True
    return InputContract(**given) if given else None


def _repo_check(args: argparse.Namespace) -> int:
    from radserve.export.repo_check import check_repository

    if args.image is not None:
        from radserve.export.ngc_images import image_tensorrt_version

        image_tensorrt_version(args.image)  # an unknown image stops here, before any model
    report = check_repository(args.repository, args.image)
    print(report.render())
    return EXIT_OK if report.ok else EXIT_FAILURE


def _add_source_arguments(export: argparse.ArgumentParser) -> None:
    source = export.add_argument_group("TorchScript or .pt2 programs (serving metadata)")
    source.add_argument("--labels", type=Path, help="labels.txt of a TorchScript or .pt2 model")
    source.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="input size of a TorchScript/.pt2 model"
    )
    source.add_argument("--resize", choices=("letterbox", "stretch"), default="stretch")
    source.add_argument("--mean", type=float, nargs=3, default=list(SETTINGS.export.mean))
    source.add_argument("--std", type=float, nargs=3, default=list(SETTINGS.export.std))
    source.add_argument("--temperature", type=float, default=1.0)


def _add_contract_arguments(export: argparse.ArgumentParser) -> None:
    contract = export.add_argument_group(
        "input contract (what the model accepts; default: CR and DX radiographs, MONOCHROME1/2)"
    )
    for flag, meaning in (
        ("modality", "DICOM Modality values, e.g. CR DX RF"),
        ("sop-class", "SOP Class UIDs"),
        ("photometric", "Photometric Interpretations, e.g. MONOCHROME1 MONOCHROME2"),
        ("body-part", "Body Part Examined values (default: any)"),
        ("view-position", "View Position values (default: any)"),
    ):
        contract.add_argument(f"--accept-{flag}", nargs="*", metavar="VALUE", help=f"{meaning}; none: any")
    contract.add_argument(
        "--accept-for-processing", action="store_true", help="accept DX For Processing (raw detector) images"
    )


def _add_gate_arguments(export: argparse.ArgumentParser) -> None:
    gate = export.add_argument_group("parity gates and precision variants")
    gate.add_argument(
        "--samples", type=int, default=SETTINGS.export.parity_samples, help="radiographs for the parity check"
    )
    gate.add_argument("--samples-from", type=Path, help="folder of DICOM files for the parity check")
    gate.add_argument(
        "--min-top1",
        type=float,
        help="required top-1 agreement with PyTorch fp32 (default 1.0 for fp32, 0.99 for fp16/int8)",
    )
    gate.add_argument("--max-abs-diff", type=float, help="allowed max abs probability difference")
    gate.add_argument(
        "--precision",
        nargs="+",
        choices=("fp32", "fp16", "int8", "bf16"),
        default=["fp32"],
        help="variants to publish side by side: NAME (fp32), NAME_fp16, NAME_int8, NAME_bf16 (OpenVINO's "
        "bf16 inference precision on a CPU that has it; embedded target)",
    )
    gate.add_argument(
        "--cpu-engine",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="the engine the embedded target runs fp32 and int8 with (bf16 always runs on openvino); the "
        "parity gate runs on it (radserve bench --engines compares them on this CPU)",
    )
    gate.add_argument(
        "--calibration-samples",
        type=int,
        default=SETTINGS.export.calibration_samples,
        help="radiographs for int8",
    )
    gate.add_argument(
        "--int8-scheme",
        choices=("auto", "s8s8", "u8s8"),
        default="auto",
        help="int8 activations: s8s8 for TensorRT, u8s8 for ONNX Runtime on CPU (auto: by target)",
    )
    gate.add_argument(
        "--int8-calibration",
        default="minmax",
        help="int8 activation ranges from the calibration radiographs: minmax, minmax-average, "
        "percentile or entropy (export/precision.py, INT8_CALIBRATIONS)",
    )


def _add_engine_arguments(export: argparse.ArgumentParser) -> None:
    engine = export.add_argument_group("TensorRT (--target tensorrt)")
    engine.add_argument(
        "--trt-accelerator", action="store_true", help="onnxruntime target: TensorRT execution accelerator"
    )
    engine.add_argument("--engine", action="store_true", help="build a TensorRT plan (= --target tensorrt)")
    engine.add_argument(
        "--workspace-gib",
        type=float,
        default=SETTINGS.export.tensorrt_workspace_gib,
        help="TensorRT builder workspace",
    )
    engine.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file, loaded and saved")
    engine.add_argument("--hardware-compatible", action="store_true", help="TensorRT plan for Ampere+")
    engine.add_argument("--version-compatible", action="store_true", help="TensorRT version-compatible plan")
    engine.add_argument(
        "--builder-optimization-level",
        type=int,
        choices=range(6),
        metavar="0-5",
        help="TensorRT builder optimization level (default: TensorRT's, 3); higher builds longer",
    )
    engine.add_argument("--work-dir", type=Path, help="keep the gated ONNX (and plans) in this folder")


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a checkpoint into a Triton model repository")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--name", help="model name in the repository (default: the --system name)")
    export.add_argument(
        "--system", help="check the checkpoint against a served system's contract (radserve systems)"
    )
    export.add_argument("--repository", type=Path, default=Path(SETTINGS.model_repository))
    export.add_argument(
        "--target",
        choices=("embedded", "embedded-gpu", "onnxruntime", "tensorrt"),
        default="embedded",
        help="embedded: ONNX Runtime on the CPU; embedded-gpu: PyTorch on CUDA (both: Python backend); "
        "onnxruntime, tensorrt: Triton's backends (NGC containers)",
    )
    export.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        help="where the model is served: onnxruntime on cpu or gpu (default gpu); the other targets "
        "serve on one device each",
    )
    export.add_argument("--keep-versions", type=int, help="keep only the newest N versions on disk")
    export.add_argument(
        "--max-batch-size",
        type=int,
        help="Triton max_batch_size (TensorRT profile max; embedded-gpu: largest padded size, default "
        f"{SETTINGS.batching.gpu_max_batch_size})",
    )
    export.add_argument(
        "--priority-levels",
        type=int,
        default=0,
        metavar="N",
        help="queue priority levels (1 first): urgent studies sent with priority 1 pass a backfill, which "
        "is sent without a priority (level N)",
    )
    export.add_argument(
        "--gradcam",
        action="store_true",
        help="also publish the Grad-CAM companion NAME_gradcam (radserve explain)",
    )
    _add_source_arguments(export)
    _add_contract_arguments(export)
    _add_gate_arguments(export)
    _add_engine_arguments(export)
    export.set_defaults(run=_export)

    repo = commands.add_parser("repo", help="model repository tools")
    repo_commands = repo.add_subparsers(dest="repo_command", required=True)
    repo_check = repo_commands.add_parser("check", help="validate a model repository (exit 0 ok, 2 not)")
    repo_check.add_argument("repository", type=Path)
    repo_check.add_argument(
        "--image",
        metavar="IMAGE",
        help="also check that this NGC image (nvcr.io/nvidia/tritonserver:YY.MM-py3) loads every plan",
    )
    repo_check.set_defaults(run=_repo_check)
