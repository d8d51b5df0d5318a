"""Decoding of every supported transfer syntax, against pydicom's decoders and lossless originals."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import uid as U
from pydicom.encaps import encapsulate

from radserve.client.dicom import (
    SUPPORTED_TRANSFER_SYNTAXES,
    Radiograph,
    decode,
    pixel_info,
    read_radiographs,
)
from radserve.errors import InputError
from tests._dicom_factory import encode, make_dataset, phantom, save, shipped, stored_values

LOSSLESS = [
    U.ExplicitVRLittleEndian,
    U.ImplicitVRLittleEndian,
    U.ExplicitVRBigEndian,
    U.DeflatedExplicitVRLittleEndian,
    U.RLELossless,
    U.JPEGLossless,
    U.JPEGLosslessSV1,
    U.JPEGLSLossless,
    U.JPEG2000Lossless,
    U.HTJ2KLossless,
    U.HTJ2KLosslessRPCL,
]
LOSSY = [U.JPEGBaseline8Bit, U.JPEGExtended12Bit, U.JPEGLSNearLossless, U.JPEG2000, U.HTJ2K]


def _stored(frames: list[np.ndarray], bits: int, signed: bool) -> np.ndarray:
    """Our raw frames as pydicom presents them: masked to Bits Stored, sign-extended."""
    arr = np.stack(frames).astype(np.int64) & ((1 << bits) - 1)
    if signed:
        arr = np.where(arr >= 1 << (bits - 1), arr - (1 << bits), arr)
    return arr


def _decoded(path: str) -> tuple[np.ndarray, pydicom.Dataset]:
    ds = pydicom.dcmread(path)
    info = pixel_info(ds, path)
    out = decode(ds, info, path)
    assert out.kind == "MONO"
    return _stored(out.frames, info.bits_stored, info.signed), ds


def test_supported_syntaxes_listed() -> None:
    assert set(LOSSLESS) | set(LOSSY) == SUPPORTED_TRANSFER_SYNTAXES
    assert U.JPEG2000MC not in SUPPORTED_TRANSFER_SYNTAXES


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
        "CT_small.dcm",
        "693_J2KI.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "JPEG2000.dcm",
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "image_dfl.dcm",
        "examples_overlay.dcm",
        "rtdose.dcm",
        "rtdose_expb.dcm",
        "rtdose_rle.dcm",
        "liver_1frame.dcm",
        "liver_expb_1frame.dcm",
    ],
)
def test_shipped_greyscale_matches_pydicom(name: str) -> None:
    """Same stored values, shape and signedness as pydicom's own decoders."""
    ours, ds = _decoded(shipped(name))
    reference = stored_values(ds)
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours, reference)


def test_mr_small_variants_identical() -> None:
    base, _ = _decoded(shipped("MR_small.dcm"))
    for name in (
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ):
        other, _ = _decoded(shipped(name))
        np.testing.assert_array_equal(other, base, err_msg=name)
    display = [read_radiographs(shipped(n))[0].pixels for n in ("MR_small.dcm", "MR_small_RLE.dcm")]
    np.testing.assert_array_equal(display[0], display[1])


def test_jpeg_extended_12bit_shipped() -> None:
    """pydicom has no 12-bit JPEG decoder here: the two shipped copies must agree with each other."""
    a, _ = _decoded(shipped("JPGExtended.dcm"))
    b, _ = _decoded(shipped("JPEG-lossy.dcm"))
    assert a.shape == (1, 1024, 256)
    assert a.min() >= 0 and a.max() < 4096 and a.max() > 255
    assert np.abs(a - b).max() <= 1


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (12, False), (16, False), (12, True), (16, True)])
@pytest.mark.parametrize("syntax", LOSSLESS)
def test_lossless_roundtrip(tmp_path, syntax: str, bits: int, signed: bool) -> None:
    if bits == 8 and syntax in (U.HTJ2KLossless, U.HTJ2KLosslessRPCL) and signed:
        pytest.skip("no signed 8-bit HTJ2K encoder")
    if syntax in (U.JPEGLossless, U.JPEGLosslessSV1) and signed:
        pytest.skip("the JPEG lossless encoder takes unsigned samples only")
    pixels = phantom(bits=bits, signed=signed)
    original = make_dataset(pixels, bits_stored=bits)
    reference = read_radiographs(save(original, tmp_path, "native.dcm"))[0].pixels
    ds = make_dataset(
        pixels,
        bits_stored=bits,
        transfer_syntax=syntax
        if syntax in (U.ImplicitVRLittleEndian, U.ExplicitVRBigEndian, U.DeflatedExplicitVRLittleEndian)
        else U.ExplicitVRLittleEndian,
    )
    if pydicom.uid.UID(syntax).is_compressed and syntax != U.DeflatedExplicitVRLittleEndian:
        encode(ds, pixels, syntax)
    path = save(ds, tmp_path, "coded.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    raw, _ = _decoded(path)
    np.testing.assert_array_equal(raw[0], pixels.astype(np.int64))
    (radiograph,) = read_radiographs(path)
    np.testing.assert_array_equal(radiograph.pixels, reference)


@pytest.mark.parametrize("syntax", LOSSY)
def test_lossy_close(tmp_path, syntax: str) -> None:
    bits = 8 if syntax == U.JPEGBaseline8Bit else 12
    pixels = phantom(bits=bits)
    window = {"WindowCenter": (1 << bits) / 2, "WindowWidth": 1 << bits}
    original = read_radiographs(save(make_dataset(pixels, bits_stored=bits, **window), tmp_path, "a.dcm"))
    ds = encode(make_dataset(pixels, bits_stored=bits, **window), pixels, syntax)
    path = save(ds, tmp_path, "lossy.dcm")
    raw, _ = _decoded(path)
    error = np.abs(raw[0] - pixels).max()
    assert error <= 0.03 * (1 << bits)
    (radiograph,) = read_radiographs(path)
    assert radiograph.pixels.shape == pixels.shape
    tolerance = np.ceil(error * 255 / (1 << bits)) + 1
    assert np.abs(radiograph.pixels.astype(int) - original[0].pixels).max() <= tolerance


@pytest.mark.parametrize(
    "syntax",
    [
        U.ExplicitVRLittleEndian,
        U.RLELossless,
        U.JPEGLSLossless,
        U.JPEGLosslessSV1,
        U.HTJ2KLossless,
        U.JPEG2000Lossless,
    ],
)
def test_multiframe(tmp_path, syntax: str) -> None:
    pixels = np.stack([phantom(bits=12, seed=s) for s in range(3)])
    ds = make_dataset(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    if syntax != U.ExplicitVRLittleEndian:
        encode(ds, pixels, syntax)
    radiographs = read_radiographs(save(ds, tmp_path, "mf.dcm"))
    assert [r.frame for r in radiographs] == [1, 2, 3]
    for frame, radiograph in zip(pixels, radiographs, strict=True):
        single = make_dataset(frame, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
        (expected,) = read_radiographs(save(single, tmp_path, "one.dcm"))
        assert expected.frame is None
        np.testing.assert_array_equal(radiograph.pixels, expected.pixels)


def test_radiograph_fields(tmp_path) -> None:
    path = save(make_dataset(phantom()), tmp_path, "x.dcm")
    (r,) = read_radiographs(tmp_path / "x.dcm")
    assert isinstance(r, Radiograph)
    assert r.path == path and r.sop_instance_uid == "1.2.826.0.1.3680043.10.543.1"
    assert r.pixels.dtype == np.uint8 and r.pixels.shape == (96, 80) and r.pixels.flags.c_contiguous


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_small_odd.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "ExplVR_BigEnd.dcm",
        "examples_rgb_color.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cr.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",
        "SC_rgb_jpeg.dcm",
        "SC_jpeg_no_color_transform.dcm",
        "SC_jpeg_no_color_transform_2.dcm",
        "SC_rgb_jpeg_app14_dcmd.dcm",
        "SC_rgb_gdcm_KY.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "examples_jpeg2k.dcm",
        "examples_ybr_color.dcm",
        "examples_palette.dcm",
    ],
)
def test_colour_is_bt601_luminance(name: str) -> None:
    path = shipped(name)
    ds = pydicom.dcmread(path)
    rgb = ds.pixel_array  # pydicom converts YBR to RGB and applies nothing else
    if ds.PhotometricInterpretation in ("YBR_FULL", "YBR_FULL_422"):
        # Y of YBR_FULL is BT.601 luminance: compare with it, not with Y of the clipped RGB
        y = pydicom.pixels.pixel_array(ds, raw=True)[..., :1].astype(np.float64)
        rgb = np.concatenate([y, y, y], axis=-1)
    elif ds.PhotometricInterpretation == "PALETTE COLOR":
        rgb = pydicom.pixels.apply_color_lut(rgb, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    rgb = rgb if frames > 1 else rgb[np.newaxis]
    top = (
        255.0
        if ds.BitsAllocated == 8 and "PALETTE" not in ds.PhotometricInterpretation
        else (65535.0 if "PALETTE" in ds.PhotometricInterpretation else 2.0**ds.BitsStored - 1)
    )
    radiographs = read_radiographs(path)
    assert len(radiographs) == frames
    for radiograph, expected in zip(radiographs, rgb, strict=True):
        assert np.abs(radiograph.pixels - _luma(expected) * 255.0 / top).max() <= 2.5


def test_jpeg_lossless_colour_matches_rle() -> None:
    """No pydicom decoder for JPEG lossless here: the RLE copy of the same image is the reference."""
    jpeg = read_radiographs(shipped("SC_rgb_jpeg_gdcm.dcm"))[0].pixels
    rle = read_radiographs(shipped("SC_rgb_rle.dcm"))[0].pixels
    np.testing.assert_array_equal(jpeg, rle)


def test_unsupported_transfer_syntax(tmp_path) -> None:
    ds = make_dataset(phantom())
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds.file_meta.TransferSyntaxUID = U.MPEG2MPML
    path = save(ds, tmp_path, "mpeg.dcm")
    with pytest.raises(InputError) as err:
        read_radiographs(path)
    assert err.value.reason == "unsupported_transfer_syntax"
    assert U.MPEG2MPML in str(err.value) and "MPEG2" in str(err.value) and path in str(err.value)
