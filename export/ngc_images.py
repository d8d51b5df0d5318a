"""Which TensorRT plans an NGC Triton image can load.

A plan runs only on the TensorRT version it was built with, unless it was built version-compatible
(TensorRT 8.6 and later): then it also runs on later releases of its major version and of the next
major only (8.6 → 10.x, 10.x → 11.x), and the server must allow the plan's embedded lean runtime
with ``--backend-config=tensorrt,version-compatible=true`` (TensorRT developer guide, 'Version
Compatibility'; Triton's tensorrt_backend README, 'Command-line Options'). The table maps each NGC
``tritonserver`` release to the TensorRT it ships (Triton Inference Server Release Notes, table
'NVIDIA Triton Inference Server Container Versions', and the Frameworks Support Matrix).
"""

from __future__ import annotations

import re

from radserve.errors import ExportError
from radserve.model_card import EngineRecord
from radserve.server_config.serving_view import VERSION_COMPATIBLE_BACKEND_CONFIG

__all__ = [
    "NGC_TENSORRT",
    "VERSION_COMPATIBLE_BACKEND_CONFIG",
    "image_tensorrt_version",
    "plan_problems",
    "runtime_loads",
]

NGC_TENSORRT: dict[str, str] = {
    "23.01": "8.5.2",
    "23.02": "8.5.3",
    "23.03": "8.5.3",
    **{f"23.{month:02d}": "8.6.1" for month in range(4, 13)},
    "24.01": "8.6.1",
    "24.02": "8.6.3",
    "24.03": "8.6.3",
    "24.04": "8.6.3",
    "24.05": "10.0.1",
    "24.06": "10.1.0",
    "24.07": "10.2.0",
    "24.08": "10.3.0",
    "24.09": "10.4.0",
    "24.10": "10.5.0",
    "24.11": "10.6.0",
    "24.12": "10.7.0",
    "25.01": "10.8.0",
    "25.02": "10.8.0",
    "25.03": "10.9.0",
}
# the major a version-compatible plan of each major also loads on
_NEXT_MAJOR = {8: 10, 10: 11}
_IMAGE = re.compile(r"(?:^|[/:])tritonserver:(\d{2}\.\d{2})(?:[-.]|$)")


def image_tensorrt_version(image: str) -> str:
    """The TensorRT version of an NGC image ``nvcr.io/nvidia/tritonserver:YY.MM-py3``.

    Raises:
        ExportError: not a tritonserver image, or a release missing from :data:`NGC_TENSORRT`.
    """
    match = _IMAGE.search(image)
    if match is None:
        raise ExportError(f"{image!r} is not an NGC image nvcr.io/nvidia/tritonserver:YY.MM-py3")
    release = match.group(1)
    if release not in NGC_TENSORRT:
        known = f"{min(NGC_TENSORRT)} to {max(NGC_TENSORRT)}"
        raise ExportError(f"no TensorRT version known for tritonserver {release} (known: {known})")
    return NGC_TENSORRT[release]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def runtime_loads(built: str, runtime: str, version_compatible: bool) -> bool:
    """Whether TensorRT ``runtime`` deserializes a plan built with TensorRT ``built``."""
    plan, here = _version(built), _version(runtime)
    if plan == here:
        return True
    if not version_compatible or here < plan or plan < (8, 6):
        return False
    return here[0] in (plan[0], _NEXT_MAJOR.get(plan[0]))


def plan_problems(engine: EngineRecord, image: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of serving ``engine``'s plan with ``image``.

    Raises:
        ExportError: ``image`` is not a known NGC tritonserver image.
    """
    runtime = image_tensorrt_version(image)
    if not runtime_loads(engine.tensorrt_version, runtime, engine.version_compatible):
        how = "version-compatible" if engine.version_compatible else "not version-compatible"
        rebuild = f"rebuild it with TensorRT {runtime} (inside {image})"
        if not engine.version_compatible and _version(engine.tensorrt_version) >= (8, 6):
            rebuild += ", or build it --version-compatible with a TensorRT this image accepts"
        return [
            f"plan built with TensorRT {engine.tensorrt_version} ({how}); {image} has {runtime}: {rebuild}"
        ], []
    if engine.version_compatible:
        return [], [f"version-compatible plan: start tritonserver with {VERSION_COMPATIBLE_BACKEND_CONFIG}"]
    return [], []
