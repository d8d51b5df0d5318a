"""Steps 0 to 3 on the GPU (``--decode gpu``): the full-size image never returns to the host.

For a file whose frames nvImageCodec decodes (:data:`~radserve.client.gpu_decode.GPU_SYNTAXES`,
greyscale, unsigned, up to 16 bits): the header is read and checked on the host (input contract,
display attributes: :mod:`radserve.client.dicom`), the frames decode on the GPU, a histogram of the
stored values comes back when the header has no window (65,536 counts: the percentile window is the
CPU path's :func:`~radserve.client.dicom._display.window_from_counts`), the display table goes to
the GPU, and the table lookup and the area resize run there (two matrix products with OpenCV's
``INTER_AREA`` weights: :func:`~radserve.client.dicom._resize.area_weights`). Only the
``uint8 [1, H, W]`` wire image comes back, within one grey level of the CPU path.

Any other file (another transfer syntax, colour, signed, a frame nvImageCodec rejects, a radiograph
smaller than its wire image) is left to the CPU decode workers: :meth:`GpuPreparer.prepare` returns
the reason, which the runner counts in ``radserve_decoded_files``.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from radserve.client.contract import ImageFacts, check_contract
from radserve.client.dicom import (
    PixelInfo,
    area_weights,
    captured_warnings,
    check_shape,
    display_lut,
    display_params,
    encoded_frames,
    needs_auto_window,
    pixel_info,
    placement,
    read_dataset,
    window_from_counts,
)
from radserve.client.flow import PreparedFile, PreparedRadiograph
from radserve.client.gpu_decode import GPU_SYNTAXES, GpuDecoder
from radserve.errors import DecodeWorkersError, InputError, NotAcceptedError
from radserve.model_card import ModelCard, ResizeMode
from radserve.reasons import Reason
from radserve.routing import RouterCard

if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)
_LUTS_KEPT = 256  # display tables kept on the device (one per header and auto window)


def gpu_fallback_reason(info: PixelInfo) -> str | None:
    """Why a file with this Image Pixel module is decoded on the CPU, or None if the GPU takes it."""
    if info.transfer_syntax not in GPU_SYNTAXES:
        return "transfer_syntax"
    if info.samples != 1 or not info.photometric.startswith("MONOCHROME"):
        return "colour"
    if info.signed:
        return "signed"
    if info.bits_allocated > 16:
        return "bit_depth"
    return None


def lut_resize(
    values: torch.Tensor, lut: torch.Tensor, size: tuple[int, int], mode: ResizeMode
) -> torch.Tensor:
    """``uint8 [H, W]`` on ``values``' device: the display table ``lut`` applied to the stored values
    ``values`` (``H x W``, uint8 or uint16) and area-resized to ``size`` = (height, width), letterbox
    or stretch as :func:`radserve.client.dicom.resize` does. Shrinks only (the caller checks)."""
    import torch

    rows, cols = values.shape
    top, left, inner_h, inner_w = placement((rows, cols), size, mode)
    if inner_h > rows or inner_w > cols:
        raise ValueError(f"lut_resize shrinks only: {rows}x{cols} to {inner_h}x{inner_w}")
    grey = lut[values.to(torch.int64)].to(torch.float32)
    height_weights, width_weights = _weights(rows, cols, inner_h, inner_w, values.device)
    inner = height_weights @ grey @ width_weights.T
    out = torch.zeros(size, dtype=torch.uint8, device=values.device)
    out[top : top + inner_h, left : left + inner_w] = inner.round_().clamp_(0, 255).to(torch.uint8)
    return out


@lru_cache(maxsize=64)
def _weights(rows: int, cols: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The area weights of a (rows, cols) → (height, width) shrink on ``device``: one copy per shape."""
    import torch

    weights = (area_weights(rows, height), area_weights(cols, width))
    return tuple(torch.from_numpy(w).to(device) for w in weights)


def require_gpu_decoding() -> None:
    """Raise :class:`DecodeWorkersError` unless PyTorch sees a CUDA device and nvImageCodec imports."""
    try:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("PyTorch sees no CUDA device")
        from nvidia import nvimgcodec  # noqa: F401
    except Exception as error:
        raise DecodeWorkersError(
            f"--decode gpu needs a CUDA GPU, PyTorch and nvImageCodec (pip install 'radserve[gpu]'): {error}"
        ) from None


class GpuPreparer:
    """nvImageCodec and PyTorch on one CUDA device; :class:`DecodeWorkersError` without them."""

    def __init__(self, device: int = 0) -> None:
        require_gpu_decoding()
        import torch

        try:
            self._device = torch.device("cuda", device)
            self._decoder = GpuDecoder()
        except Exception as error:
            raise DecodeWorkersError(
                f"--decode gpu: nvImageCodec cannot start on CUDA device {device}: {error}"
            ) from None
        self._luts: dict[tuple[Any, ...], torch.Tensor] = {}

    def prepare(self, path: str, card: ModelCard | RouterCard) -> PreparedFile | str:
        """The file's wire images, an error :class:`PreparedFile`, or why the CPU should prepare it."""
        if not isinstance(card, ModelCard):
            return "router"  # one wire image per stage contract: the CPU path builds them
        started = time.perf_counter()
        dataset = None
        try:
            with captured_warnings(path):
                dataset = read_dataset(path)
                check_contract(dataset, card.accepts, path)
                info = pixel_info(dataset, path)
                reason = gpu_fallback_reason(info)
                if reason is not None:
                    return reason
                images = self._decoder.decode(encoded_frames(dataset, info, path), path)
                params = display_params(dataset, info, path, card.rendering)
                facts = ImageFacts.of(dataset)
                uid = str(dataset.get("SOPInstanceUID", ""))
                prepared = []
                for index, image in enumerate(images):
                    wire = self._wire_image(image, info, params, card, path, index)
                    if wire is None:
                        return "enlarge"
                    frame = index + 1 if info.frames > 1 else None
                    prepared.append(
                        PreparedRadiograph(
                            uid, frame, wire, (info.rows, info.columns), params.rendering_note, facts
                        )
                    )
        except NotAcceptedError as refusal:
            uid = str(dataset.get("SOPInstanceUID", "")) if dataset is not None else ""
            return PreparedFile(
                path,
                error_reason=refusal.reason,
                error=str(refusal),
                status="not_accepted",
                sop_instance_uid=uid,
            )
        except InputError as error:
            if error.reason == Reason.DECODE_FAILED:
                return "gpu_decode_failed"  # the CPU's codecs may still read it (e.g. a liblj92 stream)
            return PreparedFile(path, error_reason=error.reason, error=str(error))
        except Exception:  # a GPU-side failure on one file: the CPU path answers for it
            LOGGER.exception("GPU preparation failed on %s; the CPU decodes it", path)
            return "gpu_error"
        return PreparedFile(path, tuple(prepared), seconds=time.perf_counter() - started)

    def _wire_image(
        self, image: Any, info: PixelInfo, params: Any, card: ModelCard, path: str, index: int
    ) -> np.ndarray[Any, Any] | None:
        import torch

        values = torch.as_tensor(image, device=self._device)
        if values.ndim == 3:
            values = values[:, :, 0]
        check_shape(tuple(values.shape), info, index, path)
        inner = placement((values.shape[0], values.shape[1]), card.input_size, card.resize)[2:]
        if inner[0] > values.shape[0] or inner[1] > values.shape[1]:
            return None
        bits = 8 * values.element_size()
        auto = None
        if needs_auto_window(params):
            counts = torch.bincount(values.flatten().to(torch.int64), minlength=1 << bits)
            auto = window_from_counts(counts.cpu().numpy(), params, bits)
        key = (params, bits, auto)
        if key not in self._luts:
            if len(self._luts) >= _LUTS_KEPT:
                self._luts.clear()
            self._luts[key] = torch.from_numpy(display_lut(params, bits, auto).copy()).to(self._device)
        wire = lut_resize(values, self._luts[key], card.input_size, card.resize)
        return wire.cpu().numpy()[np.newaxis]
