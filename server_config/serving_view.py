"""The repository as this host serves it: embedded models sized to the serving host's cores.

Export writes an embedded model (and an ``onnxruntime`` model for the CPU) with one instance and
ONNX Runtime's default threads, marked ``radserve.host_sized``. When ``radserve serve`` starts, it
points tritonserver at a view of the repository in its private work folder: per model, hard links
to the version files and the labels, and a ``config.pbtxt`` whose instance count and threads come
from *this* host (:func:`radserve.settings.cpu_split`). The repository itself is never written, so it may be
read-only; the other models are linked unchanged.

:func:`serving_device` and :func:`repository_needs` tell, from the configs alone, where a model runs
and what the server must provide for the repository (GPU metrics, Python-backend shared memory).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ModelCardError, ServerError
from radserve.model_card import (
    HOST_SIZED_PARAMETER,
    MODEL_CARD_PARAMETER,
    ONNXRUNTIME_THREADS_PARAMETER,
    ModelCard,
)
from radserve.settings import SETTINGS, cpu_split

__all__ = [
    "ORT_THREADS_PARAMETER",
    "VERSION_COMPATIBLE_BACKEND_CONFIG",
    "RepositoryNeeds",
    "build_model_view",
    "build_serving_view",
    "host_sized_config",
    "repository_needs",
    "serving_device",
]

LOGGER = logging.getLogger(__name__)
CONFIG_FILE = "config.pbtxt"
# Triton's ONNX Runtime backend reads its thread count from this parameter (Triton's
# onnxruntime_backend README, 'Other Optimization Options'); embedded_model.py reads
# ONNXRUNTIME_THREADS_PARAMETER.
ORT_THREADS_PARAMETER = "intra_op_thread_count"
# a version-compatible plan carries its lean runtime: the TensorRT backend loads it only when told to
# (tensorrt_backend README, 'Command-line Options'; docs/how-to/tensorrt-ngc.md)
VERSION_COMPATIBLE_BACKEND_CONFIG = "--backend-config=tensorrt,version-compatible=true"
_BYTES = {pb.TYPE_UINT8: 1, pb.TYPE_INT8: 1, pb.TYPE_FP16: 2, pb.TYPE_FP32: 4, pb.TYPE_INT64: 8}


def serving_device(config: pb.ModelConfig) -> Literal["cpu", "gpu"]:
    """Where ``config``'s instances run: ``gpu`` when any instance group is KIND_GPU, else ``cpu``.

    A group without a kind (KIND_AUTO) counts as ``gpu``: Triton places it on the GPUs when it sees
    any (model_configuration.md, 'Instance Groups').
    """
    gpu = (pb.ModelInstanceGroup.KIND_GPU, pb.ModelInstanceGroup.KIND_AUTO)
    return "gpu" if any(group.kind in gpu for group in config.instance_group) else "cpu"


@dataclass(frozen=True)
class RepositoryNeeds:
    """What a repository asks of its tritonserver."""

    gpu: bool = False  # some model runs on a GPU: GPU metrics on
    python_request_bytes: int = 0  # largest request + response of a Python-backend model, in bytes
    version_compatible_plans: bool = False  # some TensorRT plan needs the backend's version-compatible=true

    def backend_arguments(self) -> list[str]:
        """tritonserver's backend options for these needs (``--allow-gpu-metrics`` goes with ``gpu``).

        The Python backend's shared memory starts at ``shm-default-byte-size`` (1 MiB by default)
        and grows by ``shm-growth-byte-size`` (python_backend README, 'Managing Shared Memory'): both
        fit the largest request, so a 256-radiograph request needs no growth; never below 1 MiB.
        """
        arguments = []
        if self.python_request_bytes > 0:
            size = max(self.python_request_bytes, 1 << 20)
            arguments.append(f"--backend-config=python,shm-default-byte-size={size}")
            arguments.append(f"--backend-config=python,shm-growth-byte-size={size}")
        if self.version_compatible_plans:
            arguments.append(VERSION_COMPATIBLE_BACKEND_CONFIG)
        return arguments


def _request_bytes(config: pb.ModelConfig) -> int:
    batch = max(1, config.max_batch_size)
    tensors = (*config.input, *config.output)
    per_item = sum(_BYTES.get(tensor.data_type, 8) * _volume(tensor.dims) for tensor in tensors)
    return batch * per_item


def _volume(dims: object) -> int:
    volume = 1
    for size in dims:  # type: ignore[attr-defined]
        volume *= max(1, int(size))
    return volume


def repository_needs(repository: Path) -> RepositoryNeeds:
    """The :class:`RepositoryNeeds` of the models under ``repository`` (unreadable configs skipped:
    ``radserve repo check`` reports them)."""
    gpu, largest, compatible = False, 0, False
    for path in sorted(repository.glob(f"*/{CONFIG_FILE}")):
        try:
            config = text_format.Parse(path.read_text(), pb.ModelConfig())
        except (OSError, text_format.ParseError):
            continue
        gpu = gpu or serving_device(config) == "gpu"
        if config.backend == "python":
            largest = max(largest, _request_bytes(config))
        compatible = compatible or _version_compatible(config)
    return RepositoryNeeds(gpu, largest, compatible)


def _version_compatible(config: pb.ModelConfig) -> bool:
    """Whether ``config``'s model card records a version-compatible TensorRT plan."""
    parameter = config.parameters.get(MODEL_CARD_PARAMETER)
    if parameter is None:
        return False
    try:
        engine = ModelCard.from_json(parameter.string_value).engine
    except (ModelCardError, TypeError):
        return False
    return engine is not None and engine.version_compatible


def host_sized_config(text: str, instances: int, threads: int) -> tuple[str, bool]:
    """``config.pbtxt`` text of a host-sized model with ``instances`` x ``threads`` written in (and
    the marker removed); other configs unchanged. Second item: whether it was host-sized."""
    try:
        config = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as error:
        raise ServerError(f"config.pbtxt does not parse with Triton's schema: {error}") from None
    marker = config.parameters.get(HOST_SIZED_PARAMETER)
    if marker is None or marker.string_value != "true":
        return text, False
    del config.parameters[HOST_SIZED_PARAMETER]
    del config.instance_group[:]
    config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=instances)
    python = config.backend == "python"
    config.parameters[ONNXRUNTIME_THREADS_PARAMETER if python else ORT_THREADS_PARAMETER].string_value = str(
        threads
    )
    return text_format.MessageToString(config), True


def _link_entry(entry: Path, target: Path) -> None:
    """Hard links of ``entry``'s files (the view keeps them even when a newer export prunes the
    version); a symbolic link when the repository is on another filesystem."""
    try:
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=os.link)
        else:
            os.link(entry, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.rmtree(target, ignore_errors=True)
        target.symlink_to(entry)


def build_model_view(model: Path, target: Path, cores: int | None = None) -> None:
    """The view of one model folder in ``target`` (created): its entries linked, a host-sized config.

    The config is read once and the version files are hard-linked, so a view holds one publication
    whatever is exported meanwhile (a concurrent export makes this raise ``FileNotFoundError``).
    """
    instances, threads = cpu_split(SETTINGS.batching.max_cpu_instances, cores)
    text, sized = host_sized_config((model / CONFIG_FILE).read_text(), instances, threads)
    target.mkdir()
    for entry in model.iterdir():
        if entry.name != CONFIG_FILE and not entry.name.startswith("."):
            _link_entry(entry, target / entry.name)
    (target / CONFIG_FILE).write_text(text)
    if sized:
        LOGGER.info(
            "%s: %d instance(s) x %d ONNX Runtime thread(s) on this host", model.name, instances, threads
        )


def build_serving_view(repository: Path, into: Path, cores: int | None = None) -> Path:
    """Assemble the view of ``repository`` in ``into`` (empty or missing); its path. Hidden folders
    (an export being staged) are not models."""
    into.mkdir(parents=True, exist_ok=True)
    for model in sorted(repository.resolve().iterdir()):
        if (model / CONFIG_FILE).is_file() and not model.name.startswith("."):
            build_model_view(model, into / model.name, cores)
    return into
