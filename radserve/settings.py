"""radserve's defaults, in one place: ports, batching, client, retries, export gates.

Every component reads its defaults from :data:`SETTINGS`. Each field can be overridden by an
environment variable named ``RADSERVE_<SECTION>_<FIELD>`` (``RADSERVE_<FIELD>`` for the top-level
ones), e.g. ``RADSERVE_CLIENT_MAX_IN_FLIGHT=32`` or ``RADSERVE_PORTS_GRPC=9001``; tuples are
comma-separated. Command-line flags override both, per run. :func:`settings_table` lists them all
(the site's settings reference, docs/reference/settings.md, is generated from it).

Instance count and ONNX Runtime threads of the embedded target are not export-time settings: the
server decides them from the host it runs on (:func:`cpu_split`), so a model exported on a laptop
is served with the serving host's cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_args, get_origin, get_type_hints

from radserve.errors import ConfigurationError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "RADSERVE_"
_Section = TypeVar("_Section")  # a settings dataclass


def _unit(default: Any, unit: str, *, per_host: Callable[[], Any] | None = None) -> Any:
    """A setting's default and its unit (or meaning) for the settings reference.

    ``per_host`` computes the default on the host at start instead.
    """
    if per_host is not None:
        return field(default_factory=per_host, metadata={"unit": unit, "per_host": default})
    return field(default=default, metadata={"unit": unit})


@dataclass(frozen=True, slots=True)
class Ports:
    """Triton's endpoints."""

    http: int = _unit(8000, "TCP port, HTTP/REST (KServe v2)")
    grpc: int = _unit(8001, "TCP port, gRPC (KServe v2)")
    metrics: int = _unit(8002, "TCP port, Prometheus metrics")


@dataclass(frozen=True, slots=True)
class BatchingDefaults:
    """What export writes into each model's dynamic batcher and queue policy.

    Chosen from measurements on a 2-core CPU host (docs/how-to/benchmarks.md, "Tuning"): batching
    gains little compute there, so a short queue delay only helps requests that already arrive
    together.
    """

    max_batch_size: int = _unit(32, "radiographs")
    preferred_batch_sizes: tuple[int, ...] = _unit((4, 8, 16), "radiographs")
    max_queue_delay_microseconds: int = _unit(500, "µs")
    max_queue_size: int = _unit(256, "requests")
    queue_timeout_microseconds: int = _unit(30_000_000, "µs")
    engine_batch_size: int = _unit(
        4,
        "radiographs per engine run of the embedded target: a larger dynamic batch runs in slices "
        "(0: whole); small networks run slower per radiograph in big batches on CPU",
    )
    max_cpu_instances: int = _unit(4, "embedded target: instances on the serving host (each holds the model)")
    gpu_instances: int = _unit(1, "instances per GPU")
    gpu_max_batch_size: int = _unit(
        256, "radiographs; embedded-gpu (one CUDA graph per padded size up to it)"
    )
    gpu_python_instances: int = _unit(2, "embedded-gpu: instances per GPU (host work overlaps GPU work)")
    router_instances: int = _unit(
        8,
        "router (BLS) instances: each holds one batch while its stages answer "
        "(docs/how-to/systems.md, 'The router')",
    )


@dataclass(frozen=True, slots=True)
class ClientDefaults:
    """The gRPC client and the classify runner."""

    max_in_flight: int = _unit(16, "requests; enough for the dynamic batcher to form batches")
    decode_workers: int = _unit(
        "one per core, at most 4",
        "processes decoding DICOM",
        per_host=lambda: max(1, min(4, os.cpu_count() or 1)),
    )
    decode: str = _unit("cpu", "where files are decoded and resized: cpu (workers) or gpu (nvImageCodec)")
    request_timeout_seconds: float = _unit(60.0, "s, deadline of one gRPC request")
    retry_initial_backoff_seconds: float = _unit(0.1, "s")
    retry_max_backoff_seconds: float = _unit(5.0, "s")
    retry_give_up_after_seconds: float = _unit(180.0, "s per request, all retries together")
    ready_timeout_seconds: float = _unit(30.0, "s to wait for the model to be ready")
    grpc_max_message_bytes: int = _unit(256 * 1024 * 1024, "bytes; radiographs exceed gRPC's 4 MiB default")
    images_per_request: int = _unit(8, "radiographs packed into one request at most, when ready together")
    retry_budget_ratio: float = _unit(0.1, "retries earned per request sent (at most 10 % extra load)")
    retry_budget_burst: float = _unit(10.0, "retries; the budget's start and cap (its window)")
    deadline_retries: int = _unit(1, "retries of a request past its deadline (inference is idempotent)")
    results_fsync_rows: int = _unit(64, "rows written between two fsyncs of the results file")
    results_fsync_seconds: float = _unit(1.0, "s at most between two fsyncs of the results file")
    box_min_score: float = _unit(0.3, "detector score; boxes below it stay out of result rows and the SR")
    decode_timeout_seconds: float = _unit(120.0, "s one file may take to decode; beyond, decode_timeout row")
    decode_worker_memory_bytes: int = _unit(8 * 1024**3, "bytes of address space a decoder has")
    max_pixels_per_file: int = _unit(1 << 30, "frames x rows x columns x samples; beyond, bad_dimensions")


@dataclass(frozen=True, slots=True)
class ListenDefaults:
    """``radserve listen``: the DICOM Storage SCP that classifies what the PACS sends."""

    ae_title: str = _unit("RADSERVE", "AE title the listener answers to")
    port: int = _unit(11112, "TCP port of the DICOM listener (the registered DICOM port)")
    max_queue: int = _unit(1000, "instances received and not yet classified; beyond, C-STORE answers 0xA700")
    spool: str = _unit("radserve-spool", "folder where received instances wait (fsync'ed) until classified")
    network_timeout_seconds: float = _unit(60.0, "s an association may stay silent before it is closed")
    acse_timeout_seconds: float = _unit(30.0, "s to wait for association negotiation and release")
    dimse_timeout_seconds: float = _unit(30.0, "s to wait for the next DIMSE message of a request")
    max_associations: int = _unit(10, "associations at once; beyond, A-ASSOCIATE-RJ (local limit exceeded)")
    max_pdu_bytes: int = _unit(65536, "bytes, the largest PDU the listener receives (0: no limit)")
    require_called_ae: bool = _unit(True, "refuse associations not addressed to the listener's AE title")
    spool_max_bytes: int = _unit(20 * 1024**3, "bytes of instances waiting; beyond, C-STORE answers 0xA700")
    retry_initial_seconds: float = _unit(1.0, "s before an instance with a transient row is tried again")
    retry_max_seconds: float = _unit(60.0, "s at most between two tries of one instance (doubling)")
    max_failures: int = _unit(3, "exceptions handling one instance before it moves to spool/quarantine")
    study_quiet_seconds: float = _unit(
        30.0, "s with no new instance of a study before the listener classifies it (--studies)"
    )
    report_attempts: int = _unit(5, "tries to forward one SR before it moves to the dead-letter folder")
    report_retry_initial_seconds: float = _unit(2.0, "s before a failed SR is sent again (doubling)")
    report_retry_max_seconds: float = _unit(300.0, "s at most between two tries of one SR")
    file_group: str = _unit("", "group that may read results and SRs (0640); empty: owner only (0600)")


@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """How ``radserve serve`` runs tritonserver."""

    ready_timeout_seconds: float = _unit(120.0, "s to wait for tritonserver to be ready")
    stop_timeout_seconds: float = _unit(30.0, "s for in-flight requests to finish on SIGTERM")


@dataclass(frozen=True, slots=True)
class ContractDefaults:
    """What an exported radiograph model accepts unless ``radserve export --accept-*`` says otherwise."""

    modalities: tuple[str, ...] = _unit(("CR", "DX"), "DICOM Modality (0008,0060) values")
    sop_classes: tuple[str, ...] = _unit(
        ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"),
        "SOP Class UIDs: CR Image Storage, Digital X-Ray Image Storage - For Presentation",
    )
    photometric: tuple[str, ...] = _unit(("MONOCHROME1", "MONOCHROME2"), "Photometric Interpretation values")
    ood_quantile: float = _unit(0.05, "fraction of validation radiographs below the OOD threshold")


@dataclass(frozen=True, slots=True)
class ExportDefaults:
    """Export: ONNX, parity gates, reduced precision, TensorRT."""

    opset: int = _unit(20, "ONNX opset written (>= 17 checked)")
    mean: tuple[float, float, float] = _unit((0.485, 0.456, 0.406), "on 0..1 RGB (ImageNet's)")
    std: tuple[float, float, float] = _unit((0.229, 0.224, 0.225), "on 0..1 RGB (ImageNet's)")
    parity_samples: int = _unit(32, "radiographs")
    calibration_samples: int = _unit(128, "radiographs (int8)")
    fp32_min_top1: float = _unit(1.0, "fraction of samples agreeing with PyTorch fp32")
    fp32_max_abs_diff: float = _unit(1e-3, "probability")
    reduced_min_top1: float = _unit(0.99, "fp16 and int8")
    tensorrt_workspace_gib: float = _unit(2.0, "GiB")
    gpu_fp16_max_abs_diff: float = _unit(1e-2, "probability; embedded-gpu fp16 network vs PyTorch fp32")
    gradcam_min_correlation: float = _unit(0.99, "Pearson r of each served Grad-CAM map vs PyTorch autograd")
    reduced_max_abs_diff: float = _unit(0.01, "probability, fp16 and int8")
    cpu_engine_min_gain: float = _unit(
        0.10, "fraction faster raw (radserve tune) another CPU engine must be to replace the card's"
    )
    detector_max_detections: int = _unit(10, "boxes per image a detector answers (padded with score 0)")
    detector_parity_min_score: float = _unit(0.05, "score; detections compared by the detector's gate")
    detector_parity_min_iou: float = _unit(0.99, "IoU of each PyTorch box with its ONNX Runtime match")
    detector_parity_max_score_diff: float = _unit(1e-3, "score; a matched box's ONNX Runtime vs PyTorch")

    @property
    def tensorrt_workspace_bytes(self) -> int:
        """``tensorrt_workspace_gib`` in bytes."""
        return int(self.tensorrt_workspace_gib * (1 << 30))


@dataclass(frozen=True, slots=True)
class ClinicalDefaults:
    """Evaluation, calibration and operating thresholds of a served model (radserve.clinical)."""

    ece_bins: int = _unit(15, "equal-width confidence bins of the expected calibration error")
    bootstrap_resamples: int = _unit(1000, "resamples of the 95 % intervals")
    bootstrap_seed: int = _unit(0, "seed of the bootstrap resampling")
    confidence_level: float = _unit(0.95, "coverage of the bootstrap intervals")
    min_calibration_set: int = _unit(50, "radiographs needed to fit a temperature or a threshold")


@dataclass(frozen=True, slots=True)
class Settings:
    """All defaults shared by the server, the exporter and the client."""

    host: str = _unit("127.0.0.1", "address servers listen on and clients call")
    model_repository: str = _unit("model_repository", "folder")
    ports: Ports = field(default_factory=Ports)
    batching: BatchingDefaults = field(default_factory=BatchingDefaults)
    client: ClientDefaults = field(default_factory=ClientDefaults)
    server: ServerDefaults = field(default_factory=ServerDefaults)
    listen: ListenDefaults = field(default_factory=ListenDefaults)
    export: ExportDefaults = field(default_factory=ExportDefaults)
    contract: ContractDefaults = field(default_factory=ContractDefaults)
    clinical: ClinicalDefaults = field(default_factory=ClinicalDefaults)

    @property
    def grpc_url(self) -> str:
        """``HOST:PORT`` of the gRPC endpoint."""
        return f"{self.host}:{self.ports.grpc}"


def cpu_split(max_instances: int, cores: int | None = None) -> tuple[int, int]:
    """Instances and ONNX Runtime threads of the embedded target on a CPU host.

    One single-threaded instance per core, at most ``max_instances`` of them (each holds a copy of
    the model) sharing the cores beyond. Measured on 2 cores (docs/how-to/benchmarks.md, "Tuning"):
    two 1-thread instances served ~30 % more than one 2-thread instance, for ResNet-18 and
    EfficientNet-B0.

    Args:
        max_instances: Instances at most (``RADSERVE_BATCHING_MAX_CPU_INSTANCES``).
        cores: The host's cores; ``os.cpu_count()`` when None.

    Returns:
        (instances, ONNX Runtime threads of each).
    """
    cores = cores or os.cpu_count() or 1
    instances = max(1, min(max_instances, cores))
    return instances, max(1, cores // instances)


_BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _parse(raw: str, kind: Any, name: str) -> Any:
    """``raw`` as a value of ``kind``; a :class:`ConfigurationError` naming ``name`` when it is not one."""
    try:
        if kind is bool:
            return _BOOLEANS[raw.strip().lower()]
        if get_origin(kind) is tuple:
            items = get_args(kind)
            values = tuple(items[0](part) for part in raw.split(",") if part.strip())
            if items[-1] is not Ellipsis and len(values) != len(items):
                raise ValueError(f"{len(items)} comma-separated values expected, got {len(values)}")
            return values
        return kind(raw)
    except (ValueError, KeyError) as error:
        expected = " ".join(getattr(kind, "__name__", str(kind)).split())
        raise ConfigurationError(
            f"environment variable {name}={raw!r} is not a valid {expected}: {error}"
        ) from None


def _from_environment(cls: type[_Section], environ: Mapping[str, str], prefix: str) -> _Section:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for item in fields(cast("type[DataclassInstance]", cls)):
        kind = hints[item.name]
        if isinstance(kind, type) and is_dataclass(kind):
            values[item.name] = _from_environment(kind, environ, f"{prefix}{item.name.upper()}_")
            continue
        name = f"{prefix}{item.name.upper()}"
        if name in environ:
            values[item.name] = _parse(environ[name], kind, name)
    return cls(**values)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Defaults with the ``RADSERVE_*`` overrides of ``environ``.

    Args:
        environ: the variables to read; the process environment when None.

    Returns:
        The settings.

    Raises:
        ConfigurationError: a ``RADSERVE_*`` value does not parse as its setting's type (the message
            names the variable and its value).
    """
    return _from_environment(Settings, os.environ if environ is None else environ, ENV_PREFIX)


def settings_table(settings: Settings | None = None) -> Iterator[tuple[str, str, str]]:
    """Every setting, in declaration order.

    Args:
        settings: The settings to list; the defaults when None.

    Yields:
        (environment variable, default, unit or meaning).
    """
    yield from _rows(settings or Settings(), ENV_PREFIX)


def _rows(section: Any, prefix: str) -> Iterator[tuple[str, str, str]]:
    for item in fields(section):
        value = getattr(section, item.name)
        if is_dataclass(value):
            yield from _rows(value, f"{prefix}{item.name.upper()}_")
            continue
        shown = item.metadata.get("per_host", value)
        shown = ",".join(map(str, shown)) if isinstance(shown, tuple) else str(shown)
        yield f"{prefix}{item.name.upper()}", shown, item.metadata.get("unit", "")


SETTINGS = load_settings()


def render_settings_table(settings: Settings | None = None) -> str:
    """The Markdown table of every setting's variable, default and unit (docs/reference/settings.md).

    Args:
        settings: The settings to list; the defaults when None.

    Returns:
        The table.
    """
    lines = ["| environment variable | default | unit / meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {value} | {unit} |" for name, value, unit in settings_table(settings)]
    return "\n".join(lines)
