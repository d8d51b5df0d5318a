"""``--decode gpu``: the device-side display table and resize, which files the GPU takes, the refusal
without a GPU, and (on a GPU host with nvImageCodec) the whole preparation against the CPU path."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from radserve.client.dicom import (
    auto_window,
    display_params,
    pixel_info,
    radiographs_from_dataset,
    read_radiographs,
    window_from_counts,
)
from radserve.client.run_metrics import ClientMetrics
from radserve.errors import DecodeWorkersError
from radserve.model_card import ModelCard, ResizeMode
from tests._dicom_factory import shipped

torch = pytest.importorskip("torch")

from radserve.client.gpu_prepare import gpu_fallback_reason, lut_resize  # noqa: E402


def _radiographs() -> list:
    from radserve.synthetic.dataset import REGIONS, synthetic_dataset

    rng = np.random.default_rng(11)
    found = [
        radiograph
        for index in range(8)
        for radiograph in radiographs_from_dataset(
            synthetic_dataset(REGIONS[index % 5], rng, matrix=(int(rng.integers(300, 900)), 420)), "syn"
        )
    ]
    return (
        found + read_radiographs(shipped("CT_small.dcm")) + read_radiographs(shipped("MR_small_padded.dcm"))
    )


@pytest.mark.parametrize(
    ("size", "mode"), [((224, 224), "letterbox"), ((224, 224), "stretch"), ((61, 97), "stretch")]
)
def test_device_lut_resize_is_within_one_grey_level_of_the_cpu_path(
    size: tuple[int, int], mode: ResizeMode
) -> None:
    """The torch code the GPU runs, run here on CPU tensors, against the client's numba pass."""
    differing = compared = 0
    for radiograph in _radiographs():
        if min(radiograph.values.shape) < max(size):
            continue  # enlarging stays on the CPU path (gpu_prepare returns "enlarge")
        expected = radiograph.resized(size, mode)
        values = torch.from_numpy(radiograph.values.astype(np.int32))
        ours = lut_resize(values, torch.from_numpy(radiograph.lut.copy()), size, mode).numpy()
        assert ours.shape == expected.shape == size
        assert np.abs(ours.astype(int) - expected).max() <= 1
        differing += int((ours != expected).sum())
        compared += expected.size
    assert differing <= 1e-3 * compared


def test_lut_resize_refuses_to_enlarge() -> None:
    with pytest.raises(ValueError, match="shrinks only"):
        lut_resize(
            torch.zeros((50, 50), dtype=torch.int32),
            torch.zeros(256, dtype=torch.uint8),
            (224, 224),
            "stretch",
        )


def test_window_from_a_device_histogram_equals_the_cpu_window() -> None:
    dataset = pydicom.dcmread(shipped("CT_small.dcm"))
    info = pixel_info(dataset, "CT_small.dcm")
    params = display_params(dataset, info, "CT_small.dcm")
    frame = dataset.pixel_array.astype(np.uint16)
    counts = torch.bincount(torch.from_numpy(frame.astype(np.int64)).flatten(), minlength=1 << 16)
    assert window_from_counts(counts.numpy(), params, 16) == auto_window(frame, params)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CT_small.dcm", "transfer_syntax"),  # uncompressed
        ("JPEG2000.dcm", "signed"),  # JPEG 2000, Pixel Representation 1
        ("SC_rgb_rle.dcm", "transfer_syntax"),
        ("SC_rgb_gdcm_KY.dcm", "colour"),  # JPEG 2000, RGB
        ("SC_rgb_jpeg_gdcm.dcm", "colour"),  # JPEG Lossless SV1, RGB
    ],
)
def test_which_files_the_gpu_leaves_to_the_cpu(name: str, reason: str) -> None:
    dataset = pydicom.dcmread(shipped(name))
    assert gpu_fallback_reason(pixel_info(dataset, name)) == reason


def test_a_monochrome_unsigned_jpeg2000_file_goes_to_the_gpu(tmp_path) -> None:
    from radserve.synthetic.dataset import synthetic_dataset

    dataset = synthetic_dataset(
        "hand", np.random.default_rng(3), matrix=(256, 208), transfer_syntax=JPEG2000Lossless
    )
    assert gpu_fallback_reason(pixel_info(dataset, "hand")) is None


def test_decode_gpu_without_a_gpu_is_one_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device: the refusal is for hosts without one")
    from radserve.client.preparers import Preparers

    async def enter() -> None:
        async with Preparers("gpu", 1, (), ClientMetrics(), "demo"):
            pass

    with pytest.raises(DecodeWorkersError, match="--decode gpu needs a CUDA GPU"):
        asyncio.run(enter())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "radserve",
            "classify",
            shipped("CT_small.dcm"),
            "--model",
            "demo",
            "--decode",
            "gpu",
            "--url",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "--decode gpu needs a CUDA GPU" in done.stderr


def test_gpu_preparation_matches_the_cpu_path(tmp_path) -> None:
    """On a GPU host with the ``gpu`` extra: the wire images of JPEG 2000 and HTJ2K files."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this host (the GPU check bundle runs this on a GPU host)")
    pytest.importorskip("nvidia.nvimgcodec", reason="the 'gpu' extra (nvImageCodec) is not installed")
    from pydicom.uid import HTJ2KLossless

    from radserve.client.flow import prepare_file
    from radserve.client.gpu_prepare import GpuPreparer
    from radserve.synthetic.dataset import synthetic_dataset

    card = ModelCard(
        name="m", architecture="resnet18", labels=("a", "b"), input_size=(224, 224), resize="letterbox"
    )
    preparer = GpuPreparer()
    for index, syntax in enumerate((JPEG2000Lossless, HTJ2KLossless)):
        path = tmp_path / f"{index}.dcm"
        synthetic_dataset(
            "knee", np.random.default_rng(index), matrix=(900, 700), transfer_syntax=syntax
        ).save_as(path, enforce_file_format=True)
        gpu, cpu = preparer.prepare(str(path), card), prepare_file(str(path), card)
        assert not isinstance(gpu, str), gpu
        assert np.abs(gpu.radiographs[0].image.astype(int) - cpu.radiographs[0].image).max() <= 1
