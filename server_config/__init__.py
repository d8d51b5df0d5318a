"""How the Triton server (embedded wheel or NGC container) and Prometheus are started and configured."""

from server_config.settings import SETTINGS, BatchingDefaults, Ports, Settings
from server_config.triton import TritonServer, embedded_triton_binary

__all__ = [
    "SETTINGS",
    "BatchingDefaults",
    "Ports",
    "Settings",
    "TritonServer",
    "embedded_triton_binary",
]
