"""GPU decoding of compressed DICOM frames with nvImageCodec (optional extra ``gpu``).

JPEG 2000, HTJ2K and JPEG Lossless frames decode on the GPU into device images that expose
``__cuda_array_interface__`` (PyTorch or CuPy use them without a copy); ``DecodeParams`` keeps the
stored bit depth and the single grey channel. nvImageCodec loads nvJPEG by name, and a system
nvJPEG older than 13.0.2 cannot decode JPEG Lossless (docs/how-to/gpu-hosts.md):
:func:`preload_wheel_nvjpeg` loads the ``nvidia-nvjpeg`` wheel's library first so that the name
resolves to it.

The CPU path (``radserve.client.dicom``) stays the default; transfer syntaxes outside
:data:`GPU_SYNTAXES` are not this module's to decode.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from radserve.errors import InputError
from radserve.reasons import Reason

# JPEG Lossless (Process 14 and SV1), JPEG 2000 (lossless, lossy), HTJ2K (lossless, RPCL, lossy)
GPU_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    }
)


def preload_wheel_nvjpeg() -> str | None:
    """Load ``nvidia/cu13/lib/libnvjpeg.so.13`` of the nvidia-nvjpeg wheel globally; its path, or None."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        library = Path(root) / "cu13" / "lib" / "libnvjpeg.so.13"
        if library.is_file():
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            return str(library)
    return None


class GpuDecoder:
    """One nvImageCodec decoder on the current CUDA device; frames in, device images out."""

    def __init__(self) -> None:
        self.nvjpeg = preload_wheel_nvjpeg()
        from nvidia import nvimgcodec

        self._decoder = nvimgcodec.Decoder()
        self._params = nvimgcodec.DecodeParams(
            allow_any_depth=True, color_spec=nvimgcodec.ColorSpec.UNCHANGED
        )
        self.version = str(nvimgcodec.__version__)

    def decode(self, frames: list[bytes], path: str = "<frames>") -> list[Any]:
        """Device images of ``frames`` (one batched call); :class:`InputError` for a frame it rejects."""
        images = self._decoder.decode(frames, params=self._params)
        for index, image in enumerate(images):
            if image is None:
                raise InputError(path, Reason.DECODE_FAILED, f"nvImageCodec cannot decode frame {index + 1}")
        return list(images)

    @staticmethod
    def to_numpy(image: Any) -> np.ndarray[Any, Any]:
        """A device image as host ``H x W`` (grey) or ``H x W x C`` array."""
        array = np.asarray(image.cpu())
        return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
