"""radserve: high-throughput serving of radiograph classifiers on NVIDIA Triton Inference Server.

The core every part may import: :mod:`radserve.errors`, :mod:`radserve.model_card`,
:mod:`radserve.settings`. Above it, each folder of the repository is one package:
:mod:`radserve.client` (DICOM → gRPC → result rows), :mod:`radserve.server_config` (tritonserver and
Prometheus), :mod:`radserve.export` (checkpoint → model repository), :mod:`radserve.synthetic`
(phantom radiographs for demos and tests), :mod:`radserve.loadtests` (Locust and benchmarks) and
:mod:`radserve.cli`, the ``radserve`` command, which imports each package only when its verb runs.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("radserve")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
