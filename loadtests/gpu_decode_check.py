"""The GPU check's ``decode`` stage: nvImageCodec on the bundled files, bit-exact vs the stored pixels.

The bundle's files hold one radiograph, uncompressed and in each lossless syntax; the uncompressed
file's pixels are what radserve's CPU decoders returned for every compressed file when the bundle
was built (loadtests/gpu_bundle.py), so a GPU decode equal to them is bit-exact with the CPU path.
Per file: one-image and batched GPU decode rates, and OpenCV's CPU decode where it reads the syntax.
Then the client's ``--decode gpu`` preparation of each file against its CPU path (wire images at 224).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from radserve.loadtests.gpu_check import Paths

LOGGER = logging.getLogger("gpu-check")
BATCH = 16
REPEATS = 5


def _frame(path: str) -> tuple[bytes | None, np.ndarray | None]:
    """(encoded frame, None) of a compressed file; (None, pixels) of an uncompressed one."""
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return next(generate_frames(ds.PixelData, number_of_frames=1)), None
    rows, columns = int(ds.Rows), int(ds.Columns)
    return None, np.frombuffer(ds.PixelData, dtype="<u2")[: rows * columns].reshape(rows, columns)


def _timed(function: Any, repeats: int = REPEATS) -> float:
    """Median seconds of ``repeats`` calls of ``function`` (which synchronises itself)."""
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _decode_seconds(decoder: Any, frames: list[bytes], path: str, repeats: int) -> float:
    """Median seconds of one GPU decode call of ``frames``, synchronised."""
    import torch

    def run() -> None:
        decoder.decode(frames, path)
        torch.cuda.synchronize()

    return _timed(run, repeats)


def _cpu_decode(frame: bytes) -> tuple[np.ndarray | None, str]:
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(frame, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        return None, f"opencv: {str(error).strip().splitlines()[-1]}"
    return (image, "opencv") if image is not None else (None, "opencv cannot read this syntax")


def client_preparation(files: dict[str, str], size: int) -> dict[str, Any]:
    """The client's ``--decode gpu`` path (radserve.client.gpu_prepare) against its CPU path, per file:
    where the GPU took the file, the largest wire-image difference in grey levels, and the median
    milliseconds per file of each path (decode + display table + letterbox resize to ``size``)."""
    from radserve.client.flow import prepare_file
    from radserve.client.gpu_prepare import GpuPreparer
    from radserve.model_card import ModelCard

    card = ModelCard(
        name="check", architecture="resnet18", labels=("a", "b"), input_size=(size, size), resize="letterbox"
    )
    preparer = GpuPreparer()
    result: dict[str, Any] = {}
    for name, path in files.items():
        gpu, cpu = preparer.prepare(path, card), prepare_file(path, card)
        entry: dict[str, Any] = {"on_gpu": not isinstance(gpu, str)}
        if isinstance(gpu, str):
            entry["fallback_reason"] = gpu
        elif gpu.error_reason or cpu.error_reason:
            entry["error"] = gpu.error or cpu.error
        else:
            difference = np.abs(gpu.radiographs[0].image.astype(int) - cpu.radiographs[0].image)
            entry["max_grey_diff"] = int(difference.max())
            entry["gpu_ms"] = round(_timed(lambda path=path: preparer.prepare(path, card)) * 1000, 2)
            entry["cpu_ms"] = round(_timed(lambda path=path: prepare_file(path, card), 3) * 1000, 2)
        LOGGER.info("client preparation %s: %s", name, entry)
        result[name] = entry
    return result


def stage_decode(paths: Paths) -> dict[str, Any]:
    import torch

    from radserve.loadtests.gpu_check import save_partial

    manifest = json.loads((paths.dicom / "manifest.json").read_text())
    files = {record["name"]: str(paths.dicom / record["file"]) for record in manifest["files"]}
    _, reference = _frame(files.pop("uncompressed"))
    result: dict[str, Any] = {"matrix": manifest["matrix"], "bits_stored": manifest["bits_stored"]}
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: GPU decoding not measured (the files and manifest read fine)")
    from radserve.client.gpu_decode import GpuDecoder

    decoder = GpuDecoder()
    result.update(nvimgcodec=decoder.version, nvjpeg_preloaded=decoder.nvjpeg, files={})
    for name, path in files.items():
        frame, _ = _frame(path)
        entry: dict[str, Any] = {"bytes": len(frame)}
        try:
            (image,) = decoder.decode([frame], path)
            array = decoder.to_numpy(image)
            entry["bit_exact"] = bool(array.shape == reference.shape and np.array_equal(array, reference))
            entry["dtype"] = str(array.dtype)
            entry["gpu_one_ms"] = round(_decode_seconds(decoder, [frame], path, REPEATS) * 1000, 2)
            entry["gpu_batched_per_s"] = round(BATCH / _decode_seconds(decoder, [frame] * BATCH, path, 3), 1)
        except Exception as error:  # one syntax failing is a figure; the others still run
            entry["error"] = (
                f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
            )
        cpu, how = _cpu_decode(frame)
        entry["cpu_decoder"] = how
        if cpu is not None:
            entry["cpu_bit_exact"] = bool(np.array_equal(cpu.astype(np.uint16), reference))
            entry["cpu_one_ms"] = round(_timed(lambda frame=frame: _cpu_decode(frame), 3) * 1000, 2)
        LOGGER.info("decode %s: %s", name, entry)
        result["files"][name] = entry
        save_partial(paths, "decode", result)
    pinned = torch.from_numpy(reference.view(np.int16)).pin_memory()  # the 16-bit stored values
    result["h2d_uncompressed_ms"] = round(
        _timed(lambda: (pinned.to("cuda", non_blocking=True), torch.cuda.synchronize())) * 1000, 3
    )
    try:
        result["client_224"] = client_preparation(files, 224)
    except Exception as error:  # the client figures are their own; the decode figures stand
        result["client_error"] = f"{type(error).__name__}: {error}"
    return result
