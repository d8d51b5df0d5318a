"""Bad input: always an InputError naming the file and the reason, never another exception."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid as U

from radserve.client.dicom import read_radiographs
from radserve.errors import InputError
from tests._dicom_factory import (
    PATIENT_ID,
    PATIENT_NAME,
    encode,
    make_dataset,
    phantom,
    save,
    shipped,
)


def _fails(path: str | Path, reason: str) -> InputError:
    with pytest.raises(InputError) as err:
        read_radiographs(path)
    error = err.value
    assert error.reason == reason, str(error)
    assert error.path == str(path) and str(path) in str(error)
    for secret in (PATIENT_NAME, PATIENT_ID, "SECRET", "19700101"):
        assert secret not in str(error)
    return error


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _valid(tmp_path: Path, name: str = "ok.dcm", **attributes: object) -> str:
    return save(make_dataset(phantom(), bits_stored=12, **attributes), tmp_path, name)


def test_not_dicom(tmp_path) -> None:
    _fails(_write(tmp_path, "notes.txt", b"hello, this is not an image\n" * 20), "not_dicom")
    _fails(_write(tmp_path, "empty.dcm", b""), "not_dicom")
    _fails(_write(tmp_path, "noise.dcm", np.random.default_rng(1).bytes(4000)), "not_dicom")
    _fails(_write(tmp_path, "png.dcm", b"\x89PNG\r\n\x1a\n" + b"\x00" * 300), "not_dicom")


def test_unreadable(tmp_path) -> None:
    _fails(tmp_path, "unreadable")
    _fails(tmp_path / "missing.dcm", "unreadable")
    if os.geteuid() == 0:
        return  # root reads files whatever their mode
    path = Path(_valid(tmp_path))
    path.chmod(0)
    try:
        _fails(path, "unreadable")
    finally:
        path.chmod(0o600)


def test_truncated(tmp_path) -> None:
    data = Path(_valid(tmp_path)).read_bytes()
    _fails(_write(tmp_path, "cut-pixels.dcm", data[: len(data) - 1000]), "truncated")
    _fails(shipped("MR_truncated.dcm"), "truncated")
    _fails(shipped("rtplan_truncated.dcm"), "truncated")
    encapsulated = Path(shipped("JPEG2000.dcm")).read_bytes()
    _fails(_write(tmp_path, "cut-fragment.dcm", encapsulated[:-60]), "truncated")


def test_no_pixel_data(tmp_path) -> None:
    _fails(shipped("rtplan.dcm"), "no_pixel_data")
    ds = make_dataset(phantom())
    del ds.PixelData
    _fails(save(ds, tmp_path, "nopix.dcm"), "no_pixel_data")


def test_unsupported_transfer_syntax(tmp_path) -> None:
    ds = encode(make_dataset(phantom(), bits_stored=12), phantom(), U.JPEGLSLossless)
    ds.file_meta.TransferSyntaxUID = U.JPEG2000MC
    error = _fails(save(ds, tmp_path, "mc.dcm"), "unsupported_transfer_syntax")
    assert U.JPEG2000MC in str(error) and U.JPEG2000MC.name in str(error)


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        ({"Rows": 0}, "bad_dimensions"),
        ({"Columns": 0}, "bad_dimensions"),
        ({"Rows": 20000}, "bad_dimensions"),
        ({"NumberOfFrames": 0}, "bad_dimensions"),
        ({"Rows": 200}, "inconsistent_attributes"),  # more pixel bytes than present
        ({"NumberOfFrames": 2}, "inconsistent_attributes"),
        ({"BitsStored": 17}, "inconsistent_attributes"),
        ({"BitsAllocated": 12}, "inconsistent_attributes"),
        ({"SamplesPerPixel": 3}, "inconsistent_attributes"),
        ({"PhotometricInterpretation": "RGB"}, "inconsistent_attributes"),
        ({"PixelRepresentation": 2}, "inconsistent_attributes"),
        ({"PhotometricInterpretation": "YBR_PARTIAL_420", "SamplesPerPixel": 3}, "unsupported_photometric"),
    ],
)
def test_inconsistent_native(tmp_path, attributes: dict, reason: str) -> None:
    _fails(_valid(tmp_path, **attributes), reason)


def test_missing_rows(tmp_path) -> None:
    ds = make_dataset(phantom())
    del ds.Rows
    _fails(save(ds, tmp_path, "norows.dcm"), "bad_dimensions")


@pytest.mark.parametrize(
    "syntax", [U.RLELossless, U.JPEGLSLossless, U.JPEG2000Lossless, U.JPEGLosslessSV1, U.HTJ2KLossless]
)
def test_compressed_header_mismatch(tmp_path, syntax: str) -> None:
    ds = encode(make_dataset(phantom(), bits_stored=12), phantom(), syntax)
    ds.Rows = 200  # the codestream holds 96 rows
    expected = "decode_failed" if syntax == U.RLELossless else "inconsistent_attributes"
    assert _fails(save(ds, tmp_path, "mismatch.dcm"), expected).detail


@pytest.mark.parametrize(
    "syntax", [U.JPEGLSLossless, U.JPEG2000Lossless, U.JPEGLosslessSV1, U.HTJ2KLossless, U.RLELossless]
)
def test_corrupt_codestream(tmp_path, syntax: str) -> None:
    ds = encode(make_dataset(phantom(), bits_stored=12), phantom(), syntax)
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8" + b"\x00" * 64])
    _fails(save(ds, tmp_path, "corrupt.dcm"), "decode_failed")


def test_shipped_broken_encapsulation() -> None:
    _fails(shipped("JPEG2000-embedded-sequence-delimiter.dcm"), "decode_failed")


def test_fewer_frames_than_declared(tmp_path) -> None:
    ds = encode(make_dataset(phantom(), bits_stored=12), phantom(), U.JPEGLSLossless)
    ds.NumberOfFrames = 3
    _fails(save(ds, tmp_path, "frames.dcm"), "decode_failed")


FUZZ_SOURCES = [
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "CT_small.dcm",
]


@pytest.mark.timeout(60)
def test_fuzz_truncation_and_bit_flips(tmp_path) -> None:
    rng = np.random.default_rng(20240601)
    sources = [Path(shipped(name)).read_bytes() for name in FUZZ_SOURCES]
    sources.append(
        Path(
            save(
                encode(make_dataset(phantom(), bits_stored=12), phantom(), U.HTJ2KLossless),
                tmp_path,
                "ht.dcm",
            )
        ).read_bytes()
    )
    outcomes = {"ok": 0}
    for variant in range(120):
        data = bytearray(sources[variant % len(sources)])
        if variant % 3 != 1:  # truncate
            data = data[: int(rng.integers(0, len(data)))]
        if variant % 3 != 0 and data:  # flip bytes
            for position in rng.integers(0, len(data), size=int(rng.integers(1, 12))):
                data[position] ^= int(rng.integers(1, 256))
        path = _write(tmp_path, f"fuzz{variant}.dcm", bytes(data))
        try:
            radiographs = read_radiographs(path)
        except InputError as error:
            assert error.path == path and path in str(error)
            outcomes[error.reason] = outcomes.get(error.reason, 0) + 1
        else:
            outcomes["ok"] += 1
            for radiograph in radiographs:
                assert radiograph.pixels.dtype == np.uint8 and radiograph.pixels.ndim == 2
    assert sum(outcomes.values()) == 120
    print(outcomes)
    assert outcomes["ok"] > 0 and len(outcomes) > 2, outcomes


def test_declared_pixels_beyond_the_cap_are_refused_before_decoding(tmp_path) -> None:
    ds = encode(make_dataset(phantom(), bits_stored=12), phantom(), U.JPEGLSLossless)
    ds.Rows = ds.Columns = 16384  # each side within bounds, 16 frames of them are 4.3 G pixels
    ds.NumberOfFrames = 16
    error = _fails(save(ds, tmp_path, "huge.dcm"), "bad_dimensions")
    assert "client.max_pixels_per_file" in str(error)
