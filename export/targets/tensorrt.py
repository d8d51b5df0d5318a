"""``tensorrt``: a TensorRT plan on Triton's TensorRT backend, CUDA graphs covering every batch size.

The plan has one optimization profile (1..``max_batch_size``); the config asks for one CUDA graph
per padded batch size with a ``graph_lower_bound`` just above the previous one, so every batch the
dynamic batcher forms runs a graph (padded up to the next size), and no preferred sizes: the batcher
forms the largest batch it can within the queue delay (Triton's tensorrt_backend README, 'CUDA
Graphs', and model_configuration.md, 'CUDA Graphs'; batcher.md, 'Preferred Batch Sizes', ties
preferred sizes to models with several profiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ExportError, RadserveError
from radserve.export.hashing import file_sha256
from radserve.export.targets._base import (
    Candidate,
    Device,
    ServingTarget,
    instance_kind,
    padded_batch_sizes,
)
from radserve.export.targets.onnxruntime import OnnxRuntimeTarget
from radserve.model_card import ModelCard

if TYPE_CHECKING:
    import numpy as np

    from radserve.export.model_config import ServingOptions
    from radserve.export.pipeline import ExportRequest, Variant
    from radserve.settings import BatchingDefaults

__all__ = ["TensorRtTarget", "graph_sizes"]


def graph_sizes(batching: BatchingDefaults) -> tuple[int, ...]:
    """The batch sizes with a CUDA graph: the padded sizes up to ``max_batch_size``."""
    return padded_batch_sizes(batching.max_batch_size)


class TensorRtTarget(ServingTarget):
    """``model.plan`` and its metadata ``model.plan.json`` (export/tensorrt_plan.py), GPU only."""

    name: ClassVar[str] = "tensorrt"
    devices: ClassVar[tuple[Device, ...]] = ("gpu",)
    model_file: ClassVar[str] = "model.plan"

    @classmethod
    def serves(cls, config: pb.ModelConfig) -> bool:
        return config.platform == "tensorrt_plan" or config.backend == "tensorrt"

    def configure(self, config: pb.ModelConfig, card: ModelCard, options: ServingOptions) -> None:
        config.platform = "tensorrt_plan"
        config.default_model_filename = self.model_file
        config.instance_group.add(kind=instance_kind("gpu"), count=options.batching.gpu_instances)
        cuda = config.optimization.cuda
        cuda.graphs = options.cuda_graphs
        if not options.cuda_graphs:
            return
        lower = 1
        for size in graph_sizes(options.batching):
            spec = cuda.graph_spec.add(batch_size=size)
            if lower < size:
                spec.graph_lower_bound.batch_size = lower
            lower = size + 1

    def preferred_batch_sizes(self, batching: BatchingDefaults) -> tuple[int, ...]:
        return ()

    def warmup_batch_sizes(self, options: ServingOptions) -> tuple[int, ...]:
        return graph_sizes(options.batching) if options.cuda_graphs else (1, options.batching.max_batch_size)

    def int8_scheme(self, options: ServingOptions | None) -> str:
        return "s8s8"

    def work_folder(self, request: ExportRequest) -> Path | None:
        # the gated ONNX must outlive the export: it is what trtexec builds from elsewhere
        return request.work_dir or Path("build/export") / request.name

    def companion(self) -> ServingTarget:
        return OnnxRuntimeTarget("gpu")

    def check_version(
        self, folder: Path, config: pb.ModelConfig, card: ModelCard | None, where: str, problems: list[str]
    ) -> None:
        from radserve.export.tensorrt_plan import EngineMetadata, metadata_path

        path = folder / (config.default_model_filename or self.model_file)
        if not path.is_file():
            problems.append(f"{where}: no {path.name}")
            return
        try:
            metadata = EngineMetadata.read(path)
        except RadserveError as error:
            problems.append(f"{where}: {error}")
            return
        profile = metadata.profile
        input_size = (int(config.input[0].dims[1]), int(config.input[0].dims[2]))
        if config.max_batch_size > profile["max_batch"]:
            problems.append(
                f"{where}: max_batch_size {config.max_batch_size} exceeds the plan's profile max "
                f"{profile['max_batch']} (Triton rejects it)"
            )
        if (profile["height"], profile["width"]) != input_size:
            problems.append(
                f"{where}: plan built for {profile['height']}x{profile['width']}, config {input_size}"
            )
        if card is not None and metadata.precision != card.precision:
            problems.append(f"{where}: plan precision {metadata.precision}, model card {card.precision}")
        if metadata.plan_sha256 and file_sha256(path) != metadata.plan_sha256:
            problems.append(f"{where}: {path.name} does not match the sha256 in {metadata_path(path).name}")

    def check_image(self, folder: Path, card: ModelCard | None, image: str) -> tuple[list[str], list[str]]:
        from radserve.export.ngc_images import plan_problems
        from radserve.export.tensorrt_plan import EngineMetadata

        engine = card.engine if card is not None else None
        if engine is None:  # a card written before it recorded its plan: the plan's own metadata
            try:
                engine = EngineMetadata.read(folder / self.model_file).record()
            except RadserveError as error:
                return [str(error)], []
        return plan_problems(engine, image)

    def publish_candidates(
        self,
        request: ExportRequest,
        candidates: Sequence[Candidate],
        images: np.ndarray,
        reference: np.ndarray,
        work: Path,
    ) -> list[Variant]:
        """Build, gate and publish one plan per variant (GPU hosts with TensorRT only).

        Without TensorRT or a GPU: :class:`ExportError` listing the trtexec command of every variant;
        the gated ONNX files stay in ``work`` for it.
        """
        from radserve.export.model_config import ServingOptions
        from radserve.export.parity import compare, gate
        from radserve.export.pipeline import Variant, thresholds
        from radserve.export.repository import publish
        from radserve.export.tensorrt_plan import (
            PLAN_FILE,
            EngineSpec,
            Profile,
            build_engine,
            current_runtime,
            engine_probabilities,
            format_command,
            metadata_path,
            trtexec_command,
        )

        options = request.options or ServingOptions()
        specs = [
            EngineSpec(
                onnx_path=onnx_path.resolve(),
                plan_path=(work / f"{card.name}.plan").resolve(),
                profile=Profile.for_batching(options.batching, *card.input_size),
                precision=precision,
                workspace_bytes=request.engine.workspace_bytes,
                timing_cache=request.engine.timing_cache,
                hardware_compatible=request.engine.hardware_compatible,
                version_compatible=request.engine.version_compatible,
                optimization_level=request.engine.optimization_level,
            )
            for precision, card, _, onnx_path in candidates
        ]
        try:
            current_runtime()
        except ExportError as error:
            commands = "\n".join(f"  {format_command(trtexec_command(spec))}" for spec in specs)
            raise ExportError(
                f"cannot build a TensorRT plan here: {error}. The gated ONNX is in {work}; build the "
                f"plan(s) inside the NGC TensorRT/Triton container with:\n{commands}"
            ) from None
        published = []
        for (precision, card, _, _), spec in zip(candidates, specs, strict=True):
            engine = build_engine(spec)
            report = compare(reference, engine_probabilities(spec.plan_path, images), "pytorch fp32")
            # TensorRT runs fp32 convolutions as TF32 by default: only an explicit --max-abs-diff applies
            min_top1, _ = thresholds(request, precision)
            gate(report, min_top1, request.max_abs_diff, f"{card.name} (tensorrt {precision})")
            parity = card.parity.with_report(f"tensorrt_{precision}", report)
            card = card.replace(parity=parity, engine=engine.record())
            folder = publish(
                request.repository,
                card,
                spec.plan_path,
                self,
                options,
                keep_versions=request.keep_versions,
                extra_files={metadata_path(Path(PLAN_FILE)).name: metadata_path(spec.plan_path)},
                engine=engine,
            )
            published.append(Variant(precision, card, report, folder))
        return published
