"""How the Triton server (embedded wheel or NGC container) and Prometheus are started and configured."""

from radserve.server_config.serving_view import build_serving_view
from radserve.server_config.triton import TritonServer, embedded_triton_binary, free_ports

__all__ = ["TritonServer", "build_serving_view", "embedded_triton_binary", "free_ports"]
