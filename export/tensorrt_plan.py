"""ONNX → TensorRT plan for the ``tensorrt`` target, with metadata that guards its use.

A plan is tied to the TensorRT version and GPU architecture it was built with (unless built
hardware- or version-compatible). :func:`build_engine` writes ``model.plan`` and, beside it,
``model.plan.json`` (:class:`EngineMetadata`); :func:`check_engine_metadata` refuses a plan whose
metadata does not match the runtime. Precision lives in the ONNX (design decision 3): the network
is strongly typed (TensorRT 10: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11:
always), so the fp16 and int8 Q/DQ ONNX variants build as they are, with no builder precision flags.

Where ``tensorrt`` cannot be imported or no GPU is present, :func:`build_engine` raises
:class:`ExportError` carrying the equivalent ``trtexec`` command (:func:`trtexec_command`) to run
inside the NGC TensorRT or Triton container.
"""

from __future__ import annotations

import json
import logging
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from radserve.errors import ExportError
from radserve.export.hashing import file_sha256
from radserve.export.ngc_images import runtime_loads
from radserve.model_card import INPUT_NAME, OUTPUT_NAME, EngineRecord, Precision
from radserve.settings import SETTINGS, BatchingDefaults

LOGGER = logging.getLogger(__name__)

PLAN_FILE = "model.plan"
METADATA_SUFFIX = ".json"
METADATA_FORMAT = "radserve-engine/1"
DEFAULT_WORKSPACE_BYTES = SETTINGS.export.tensorrt_workspace_bytes
# Hardware-compatible plans run on every GPU from this compute capability on.
AMPERE = (8, 0)


@dataclass(frozen=True)
class Profile:
    """The one optimization profile: batch sizes of ``image [B, 1, H, W]``."""

    min_batch: int
    opt_batch: int
    max_batch: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ExportError(
                f"optimization profile needs 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )

    @classmethod
    def for_batching(cls, batching: BatchingDefaults, height: int, width: int) -> Profile:
        """min 1, opt = the batcher's largest preferred batch, max = ``max_batch_size``."""
        preferred = [size for size in batching.preferred_batch_sizes if size <= batching.max_batch_size]
        return cls(1, max(preferred, default=batching.max_batch_size), batching.max_batch_size, height, width)

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 1, self.height, self.width)

    def trtexec_shape(self, batch: int) -> str:
        return f"{INPUT_NAME}:" + "x".join(str(size) for size in self.shape(batch))


@dataclass(frozen=True)
class EngineSpec:
    """What to build: the source ONNX, where the plan goes, and how."""

    onnx_path: Path
    plan_path: Path
    profile: Profile
    precision: Precision = "fp32"
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache: Path | None = None
    hardware_compatible: bool = False
    version_compatible: bool = False
    optimization_level: int | None = None  # builder optimization level 0-5; None: TensorRT's default


@dataclass(frozen=True)
class EngineMetadata:
    """Written as ``model.plan.json`` beside the plan."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    profile: dict[str, Any]
    source_onnx_sha256: str
    plan_sha256: str = ""
    hardware_compatibility: str = "none"  # or "ampere+"
    version_compatible: bool = False
    format: str = METADATA_FORMAT
    input: dict[str, Any] = field(default_factory=dict)

    def record(self) -> EngineRecord:
        """What the model card records of this plan."""
        return EngineRecord(
            tensorrt_version=self.tensorrt_version,
            compute_capability=self.compute_capability,
            gpu_name=self.gpu_name,
            hardware_compatible=self.hardware_compatibility == "ampere+",
            version_compatible=self.version_compatible,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = list(self.compute_capability)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineMetadata:
        if data.get("format") != METADATA_FORMAT:
            raise ExportError(f"engine metadata is not {METADATA_FORMAT}")
        known = set(cls.__dataclass_fields__)
        values = {key: value for key, value in data.items() if key in known}
        values["compute_capability"] = tuple(values["compute_capability"])
        try:
            return cls(**values)
        except TypeError as error:
            raise ExportError(f"engine metadata is incomplete: {error}") from None

    def write(self, plan_path: Path) -> Path:
        path = metadata_path(plan_path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, plan_path: Path) -> EngineMetadata:
        path = metadata_path(plan_path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ExportError(f"{plan_path}: no engine metadata {path.name} beside the plan") from None
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise ExportError(f"{path}: unreadable engine metadata: {error}") from None


@dataclass(frozen=True)
class Runtime:
    """The TensorRT version and GPU a plan is about to be loaded on."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]


def metadata_path(plan_path: Path) -> Path:
    return plan_path.with_name(plan_path.name + METADATA_SUFFIX)


def trtexec_command(spec: EngineSpec) -> list[str]:
    """The ``trtexec`` command line that builds the same plan as :func:`build_engine`."""
    profile = spec.profile
    command = [
        "trtexec",
        f"--onnx={spec.onnx_path}",
        f"--saveEngine={spec.plan_path}",
        f"--minShapes={profile.trtexec_shape(profile.min_batch)}",
        f"--optShapes={profile.trtexec_shape(profile.opt_batch)}",
        f"--maxShapes={profile.trtexec_shape(profile.max_batch)}",
        # trtexec reads plain sizes as MiB
        f"--memPoolSize=workspace:{max(1, spec.workspace_bytes >> 20)}",
        "--stronglyTyped",
    ]
    if spec.timing_cache is not None:
        command.append(f"--timingCacheFile={spec.timing_cache}")
    if spec.hardware_compatible:
        command.append("--hardwareCompatibilityLevel=ampere+")
    if spec.version_compatible:
        command.append("--versionCompatible")
    if spec.optimization_level is not None:
        command.append(f"--builderOptimizationLevel={spec.optimization_level}")
    command.append("--skipInference")
    return command


def timing_cache_path(requested: Path | None, runtime: Runtime) -> Path | None:
    """The timing cache file of ``runtime``: ``requested`` with the TensorRT version and the compute
    capability in its name, so caches of several images and GPUs sit side by side (a cache is valid
    for one TensorRT version and one GPU: TensorRT developer guide, 'Timing Cache')."""
    if requested is None:
        return None
    key = f"trt{runtime.tensorrt_version}-sm{runtime.compute_capability[0]}{runtime.compute_capability[1]}"
    return requested.with_name(f"{requested.stem}.{key}{requested.suffix or '.cache'}")


def format_command(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def check_engine_metadata(metadata: EngineMetadata, runtime: Runtime) -> None:
    """Refuse (:class:`ExportError`) a plan that was not built for ``runtime``."""
    problems = []
    if not runtime_loads(metadata.tensorrt_version, runtime.tensorrt_version, metadata.version_compatible):
        # a version-compatible plan runs on a later TensorRT of its major or the next (8.6 → 10 → 11)
        problems.append(
            f"built with TensorRT {metadata.tensorrt_version}, the runtime is {runtime.tensorrt_version}"
        )
    if metadata.hardware_compatibility == "ampere+":
        if runtime.compute_capability < AMPERE:
            problems.append(
                f"hardware-compatible (ampere+) plan, but the GPU {runtime.gpu_name} has compute "
                f"capability {_cc(runtime.compute_capability)}"
            )
    elif metadata.compute_capability != runtime.compute_capability:
        problems.append(
            f"built for compute capability {_cc(metadata.compute_capability)} ({metadata.gpu_name}), "
            f"the GPU is {runtime.gpu_name} ({_cc(runtime.compute_capability)})"
        )
    if problems:
        raise ExportError("TensorRT plan refused: " + "; ".join(problems) + "; rebuild it on this host")


def check_plan(plan_path: Path, runtime: Runtime | None = None) -> EngineMetadata:
    """Read ``plan_path``'s metadata, check the plan's bytes and its fit to ``runtime`` (default: here)."""
    metadata = EngineMetadata.read(plan_path)
    if metadata.plan_sha256 and file_sha256(plan_path) != metadata.plan_sha256:
        raise ExportError(f"{plan_path}: the plan does not match the sha256 in its metadata")
    check_engine_metadata(metadata, runtime or current_runtime())
    return metadata


def current_runtime() -> Runtime:
    """TensorRT version and the first GPU; :class:`ExportError` where either is missing."""
    try:
        import tensorrt
    except ImportError as error:
        raise ExportError(f"TensorRT is not installed here ({error})") from None
    try:
        import torch
    except ImportError as error:  # the export extra brings torch; it queries the GPU
        raise ExportError(f"torch is needed to query the GPU ({error})") from None
    if not torch.cuda.is_available():
        raise ExportError("no CUDA GPU is available here")
    capability = torch.cuda.get_device_capability(0)
    return Runtime(tensorrt.__version__, torch.cuda.get_device_name(0), (capability[0], capability[1]))


def build_engine(spec: EngineSpec) -> EngineMetadata:
    """Build ``spec.plan_path`` and its metadata with the TensorRT Python API.

    :class:`ExportError` with the equivalent ``trtexec`` command where TensorRT or a GPU is absent
    or the build fails.
    """
    command = format_command(trtexec_command(spec))
    try:
        runtime = current_runtime()
    except ExportError as error:
        raise ExportError(
            f"cannot build a TensorRT plan: {error}. Build it inside the NGC TensorRT/Triton container "
            f"with:\n  {command}"
        ) from None
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10; deprecated and always on in TensorRT 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(spec.onnx_path)):
        errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {spec.onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    profile = spec.profile
    optimization = builder.create_optimization_profile()
    optimization.set_shape(
        INPUT_NAME,
        profile.shape(profile.min_batch),
        profile.shape(profile.opt_batch),
        profile.shape(profile.max_batch),
    )
    config.add_optimization_profile(optimization)
    if spec.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if spec.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if spec.optimization_level is not None:
        config.builder_optimization_level = spec.optimization_level

    cache_path = timing_cache_path(spec.timing_cache, runtime)
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    # False: a cache from another device or TensorRT version is refused, and set_timing_cache says so
    if not config.set_timing_cache(timing_cache, False):
        raise ExportError(f"TensorRT refused the timing cache {cache_path}; delete it and build again")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build {spec.onnx_path}; try:\n  {command}")
    spec.plan_path.parent.mkdir(parents=True, exist_ok=True)
    spec.plan_path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    metadata = EngineMetadata(
        tensorrt_version=runtime.tensorrt_version,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        precision=spec.precision,
        profile=asdict(profile),
        source_onnx_sha256=file_sha256(spec.onnx_path),
        plan_sha256=file_sha256(spec.plan_path),
        hardware_compatibility="ampere+" if spec.hardware_compatible else "none",
        version_compatible=spec.version_compatible,
        input={"name": INPUT_NAME, "dtype": "UINT8", "output": OUTPUT_NAME},
    )
    metadata.write(spec.plan_path)
    LOGGER.info("built %s (%.1f MB) with TensorRT %s", spec.plan_path, len(serialized) / 1e6, trt.__version__)
    return metadata


def engine_probabilities(plan_path: Path, images: Any) -> Any:
    """Run a checked plan on ``uint8 [N, 1, H, W]`` images (GPU hosts; buffers via torch.cuda)."""
    import numpy as np
    import tensorrt as trt
    import torch

    metadata = check_plan(plan_path)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = metadata.version_compatible
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise ExportError(f"TensorRT cannot load {plan_path}")
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    step = metadata.profile["max_batch"]
    parts = []
    for start in range(0, len(images), step):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + step])).cuda()
        context.set_input_shape(INPUT_NAME, tuple(batch.shape))
        output = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(INPUT_NAME, batch.data_ptr())
        context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"TensorRT inference failed with {plan_path}")
        stream.synchronize()
        parts.append(output.cpu().numpy())
    return np.concatenate(parts)


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"
