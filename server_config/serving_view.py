"""The repository as this host serves it: embedded models sized to the serving host's cores.

Export writes an embedded model with one instance and ONNX Runtime's default threads, marked
``radserve.host_sized``. When ``radserve serve`` starts, it points tritonserver at a view of the
repository in its private work folder: per model, links to the version folders and the labels, and
a ``config.pbtxt`` whose instance count and threads come from *this* host
(:func:`radserve.settings.cpu_split`). The repository itself is never written, so it may be
read-only; models of the NGC targets are linked unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from radserve.errors import ServerError
from radserve.model_card import HOST_SIZED_PARAMETER, ONNXRUNTIME_THREADS_PARAMETER
from radserve.settings import SETTINGS, cpu_split

LOGGER = logging.getLogger(__name__)
CONFIG_FILE = "config.pbtxt"


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
    config.parameters[ONNXRUNTIME_THREADS_PARAMETER].string_value = str(threads)
    return text_format.MessageToString(config), True


def build_serving_view(repository: Path, into: Path, cores: int | None = None) -> Path:
    """Assemble the view of ``repository`` in ``into`` (empty or missing); its path."""
    instances, threads = cpu_split(SETTINGS.batching.max_cpu_instances, cores)
    into.mkdir(parents=True, exist_ok=True)
    for model in sorted(repository.resolve().iterdir()):
        config_file = model / CONFIG_FILE
        if not config_file.is_file():
            continue
        target = into / model.name
        target.mkdir()
        for entry in model.iterdir():
            if entry.name != CONFIG_FILE:
                (target / entry.name).symlink_to(entry)
        text, sized = host_sized_config(config_file.read_text(), instances, threads)
        (target / CONFIG_FILE).write_text(text)
        if sized:
            LOGGER.info(
                "%s: %d instance(s) x %d ONNX Runtime thread(s) on this host", model.name, instances, threads
            )
    return into
