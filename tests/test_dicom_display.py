"""The display lookup table against an independent rendering built from pydicom's functions."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from radserve.client.dicom import (
    display_lut,
    display_params,
    pixel_info,
    radiographs_from_dataset,
    read_radiographs,
    resize,
)
from radserve.errors import InputError, NotAcceptedError
from radserve.model_card import RenderingPolicy, ResizeMode
from tests._dicom_factory import (
    HIGHDICOM_DX,
    PATIENT_ID,
    PATIENT_NAME,
    make_dataset,
    max_error,
    phantom,
    reference_display,
    save,
    shipped,
    stored_values,
)


def _check(ds: Dataset, path: str, tolerance: float = 1.0) -> list[np.ndarray]:
    """Our display of every frame is within ``tolerance`` grey levels of the reference."""
    radiographs = radiographs_from_dataset(ds, path)
    frames = stored_values(ds)
    assert len(radiographs) == len(frames)
    for radiograph, frame in zip(radiographs, frames, strict=True):
        assert radiograph.pixels.dtype == np.uint8
        assert max_error(radiograph.pixels, reference_display(ds, frame)) <= tolerance
    return [r.pixels for r in radiographs]


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",  # window LINEAR, signed
        "CT_small.dcm",  # rescale, no window: percentile window
        "693_J2KI.dcm",  # rescale + window, Bits Stored 14 signed, padding
        "J2K_pixelrep_mismatch.dcm",  # several windows: the first is used
        "examples_overlay.dcm",  # Bits Stored 12, two windows
        "JPEG2000.dcm",  # signed, no window
        "rtdose.dcm",  # 32-bit multi-frame: evaluated directly
        "liver_1frame.dcm",  # 1 bit
        "image_dfl.dcm",  # deflated 8-bit
    ],
)
def test_shipped_files_match_reference(name: str) -> None:
    path = shipped(name)
    _check(pydicom.dcmread(path), path)


def _ds(pixels: np.ndarray | None = None, bits: int = 12, **attributes: object) -> Dataset:
    return make_dataset(phantom(bits=bits) if pixels is None else pixels, bits_stored=bits, **attributes)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("centre", "width"), [(2048.0, 4096.0), (1800.5, 700.0), (3000.0, 1.0)])
def test_window_functions(function: str, centre: float, width: float) -> None:
    ds = _ds(WindowCenter=centre, WindowWidth=width, VOILUTFunction=function)
    _check(ds, "window.dcm")


def test_multiple_windows_use_first() -> None:
    ds = _ds(WindowCenter=[1500, 3000], WindowWidth=[800, 100])
    first = _ds(WindowCenter=1500, WindowWidth=800)
    a = radiographs_from_dataset(ds, "a")[0].pixels
    np.testing.assert_array_equal(a, radiographs_from_dataset(first, "b")[0].pixels)


def test_rescale_then_window() -> None:
    ds = _ds(RescaleSlope=0.5, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=1000)
    _check(ds, "rescale.dcm")


def _lut_item(first: int, bits: int, data: np.ndarray, as_ow: bool) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data) % 65536, first, bits]
    if as_ow:
        item.LUTData = data.astype("<u2").tobytes()
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(v) for v in data]
        item["LUTData"].VR = "US"
    return item


@pytest.mark.parametrize("as_ow", [False, True])
def test_voi_lut_sequence(as_ow: bool) -> None:
    entries = np.arange(4096)
    curve = np.rint(65535 / (1 + np.exp(-(entries - 2048) / 300.0))).astype(np.uint16)
    ds = _ds()
    ds.VOILUTSequence = Sequence([_lut_item(0, 16, curve, as_ow)])
    _check(ds, "voilut.dcm")


def test_window_preferred_over_voi_lut() -> None:
    ds = _ds(WindowCenter=1000, WindowWidth=500)
    ds.VOILUTSequence = Sequence([_lut_item(0, 16, np.full(4096, 65535, np.uint16), False)])
    window_only = _ds(WindowCenter=1000, WindowWidth=500)
    np.testing.assert_array_equal(
        radiographs_from_dataset(ds, "a")[0].pixels, radiographs_from_dataset(window_only, "b")[0].pixels
    )


@pytest.mark.parametrize("as_ow", [False, True])
def test_modality_lut_sequence(as_ow: bool) -> None:
    table = np.rint(np.sqrt(np.arange(3000)) * 100).astype(np.uint16)  # first mapped value 500
    ds = _ds(WindowCenter=2700, WindowWidth=5000)
    ds.ModalityLUTSequence = Sequence([_lut_item(500, 16, table, as_ow)])
    _check(ds, "mlut.dcm")
    del ds.WindowCenter, ds.WindowWidth  # percentile window over the LUT output
    _check(ds, "mlut-auto.dcm")


def test_monochrome1_inverted_once_bones_bright() -> None:
    """A MONOCHROME1 CR: high attenuation (bone) is stored low and must display bright."""
    pixels = np.full((40, 40), 3500, np.uint16)
    pixels[10:30, 10:30] = 300  # bone
    ds = _ds(pixels, PhotometricInterpretation="MONOCHROME1", WindowCenter=2000, WindowWidth=4000)
    out = _check(ds, "m1.dcm")[0]
    assert out[20, 20] > 200 and out[0, 0] < 50
    ds.PresentationLUTShape = "INVERSE"  # consistent: still inverted exactly once
    np.testing.assert_array_equal(radiographs_from_dataset(ds, "m1.dcm")[0].pixels, out)
    ds2 = _ds(pixels, PhotometricInterpretation="MONOCHROME1")
    assert radiographs_from_dataset(ds2, "auto.dcm")[0].pixels[20, 20] == 255
    _check(ds2, "auto.dcm")


@pytest.mark.parametrize(("photometric", "shape"), [("MONOCHROME2", "INVERSE"), ("MONOCHROME1", "IDENTITY")])
def test_presentation_lut_shape_conflict_rendered_by_photometric(caplog, photometric, shape) -> None:
    """PS3.3 C.11.6.1.2 pairs IDENTITY with MONOCHROME2, INVERSE with MONOCHROME1; known DX objects carry
    the other one. By default the Photometric Interpretation wins and the row says so."""
    window = {"WindowCenter": 2048, "WindowWidth": 4096, "PhotometricInterpretation": photometric}
    plain = radiographs_from_dataset(_ds(**window), "plain.dcm")[0]
    with caplog.at_level(logging.WARNING, logger="radserve.client.dicom"):
        (conflict,) = radiographs_from_dataset(
            _ds(PresentationLUTShape=shape, **window), "/data/conflict.dcm"
        )
    np.testing.assert_array_equal(conflict.pixels, plain.pixels)
    assert plain.rendering_note == ""
    assert shape in conflict.rendering_note and photometric in conflict.rendering_note
    assert "/data/conflict.dcm" in caplog.text and shape in caplog.text
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text


def test_presentation_lut_shape_conflict_refused_when_the_card_says_so() -> None:
    ds = _ds(PresentationLUTShape="INVERSE", WindowCenter=2048, WindowWidth=4096)
    with pytest.raises(NotAcceptedError) as refused:
        radiographs_from_dataset(ds, "/data/fuji.dcm", RenderingPolicy(presentation_lut_conflict="refuse"))
    assert refused.value.reason == "presentation_lut_shape"
    assert "/data/fuji.dcm" in str(refused.value) and "INVERSE" in str(refused.value)
    consistent = _ds(PresentationLUTShape="IDENTITY", WindowCenter=2048, WindowWidth=4096)
    assert radiographs_from_dataset(consistent, "ok.dcm", RenderingPolicy(presentation_lut_conflict="refuse"))


def test_highdicom_dx_image_consistent_presentation_lut_shape() -> None:
    """highdicom's own DX test image: MONOCHROME1 with INVERSE, the pair the standard expects."""
    ds = pydicom.dcmread(HIGHDICOM_DX)
    (pixels,) = _check(ds, HIGHDICOM_DX)
    refused = RenderingPolicy(presentation_lut_conflict="refuse")
    (radiograph,) = radiographs_from_dataset(ds, HIGHDICOM_DX, refused)
    np.testing.assert_array_equal(radiograph.pixels, pixels)
    assert radiograph.rendering_note == ""


def test_voi_lut_preferred_over_window_when_the_card_says_so() -> None:
    """pydicom's apply_voi_lut prefers the VOI LUT Sequence: the card's ``voi_first`` picks the same."""
    entries = np.arange(4096)
    curve = np.rint(65535 / (1 + np.exp(-(entries - 2048) / 300.0))).astype(np.uint16)
    ds = _ds(WindowCenter=1000, WindowWidth=500)
    ds.VOILUTSequence = Sequence([_lut_item(0, 16, curve, False)])
    (lut_first,) = radiographs_from_dataset(ds, "both.dcm", RenderingPolicy(voi_first="lut"))
    assert max_error(lut_first.pixels, reference_display(ds, stored_values(ds)[0], prefer_lut=True)) <= 1.0
    window_first = radiographs_from_dataset(ds, "both.dcm")[0].pixels
    assert not np.array_equal(lut_first.pixels, window_first)


@pytest.mark.parametrize("as_ow", [False, True])
def test_voi_lut_depth_taken_from_its_entries(as_ow: bool) -> None:
    """A VOI LUT declared 16 bits whose entries are 12-bit (dcmtk's --ignore-vlut-depth): full contrast."""
    entries = np.arange(4096)
    curve = np.rint(4095 / (1 + np.exp(-(entries - 2048) / 300.0))).astype(np.uint16)
    ds = _ds()
    ds.VOILUTSequence = Sequence([_lut_item(0, 16, curve, as_ow)])
    (radiograph,) = radiographs_from_dataset(ds, "vlut.dcm")
    frame = stored_values(ds)[0]
    assert max_error(radiograph.pixels, reference_display(ds, frame, lut_bits=12)) <= 1.0
    assert np.percentile(radiograph.pixels, 99) > 200  # 13 of 255 when scaled by the declared 16 bits
    assert "12 bits" in radiograph.rendering_note and "16" in radiograph.rendering_note
    declared = radiographs_from_dataset(ds, "vlut.dcm", RenderingPolicy(voi_lut_depth="descriptor"))[0]
    assert max_error(declared.pixels, reference_display(ds, frame)) <= 1.0
    assert declared.pixels.max() <= 16 and declared.rendering_note == ""


def test_values_stored_above_bit_zero_follow_high_bit() -> None:
    """PS3.5 8.1.1: High Bit 15 with Bits Stored 12 puts the value in bits 4..15 (the low bits are not
    part of it)."""
    low = _ds(WindowCenter=2048, WindowWidth=4096)
    pixels = phantom(bits=12)
    high = _ds((pixels << 4) | 0x5, WindowCenter=2048, WindowWidth=4096)
    high.HighBit = 15
    (shifted,) = radiographs_from_dataset(high, "highbit.dcm")
    np.testing.assert_array_equal(shifted.pixels, radiographs_from_dataset(low, "low.dcm")[0].pixels)
    assert "High Bit 15" in shifted.rendering_note


@pytest.mark.parametrize("high_bit", [10, 16])
def test_high_bit_outside_the_container_is_an_input_error(high_bit: int) -> None:
    ds = _ds()
    ds.HighBit = high_bit
    with pytest.raises(InputError) as error:
        radiographs_from_dataset(ds, "/data/hb.dcm")
    assert error.value.reason == "inconsistent_attributes" and "HighBit" in str(error.value)


@pytest.mark.parametrize("modality", ["CR", "DX"])
def test_missing_photometric_on_a_radiograph_refused(modality: str) -> None:
    ds = _ds(Modality=modality)
    del ds.PhotometricInterpretation
    with pytest.raises(NotAcceptedError) as refused:
        radiographs_from_dataset(ds, "/data/nopi.dcm")
    assert refused.value.reason == "photometric" and modality in str(refused.value)


def test_missing_photometric_elsewhere_is_monochrome2() -> None:
    ds = _ds(Modality="OT", WindowCenter=2048, WindowWidth=4096)
    expected = radiographs_from_dataset(ds, "m2.dcm")[0].pixels
    del ds.PhotometricInterpretation
    np.testing.assert_array_equal(radiographs_from_dataset(ds, "nopi.dcm")[0].pixels, expected)


def test_padding_black_and_excluded_from_auto_window() -> None:
    pixels = phantom(bits=12)
    pixels[:, :20] = 0  # collimator padding
    for ds in (
        _ds(pixels, PixelPaddingValue=0),
        _ds(pixels, PhotometricInterpretation="MONOCHROME1", PixelPaddingValue=0),
    ):
        out = _check(ds, "pad.dcm")[0]
        assert (out[:, :20] == 0).all()
        # the window spans the image values only: had padding (0) counted, nothing would reach 0
        assert out[:, 20:].max() == 255 and out[:, 20:].min() == 0


def test_padding_range_limit_and_signed_padding() -> None:
    pixels = phantom(bits=12, signed=True)
    pixels[:8] = -2048
    pixels[8:12] = -2040
    ds = _ds(pixels, PixelPaddingValue=-2048, PixelPaddingRangeLimit=-2030, WindowCenter=0, WindowWidth=3000)
    out = _check(ds, "range.dcm")[0]
    assert (out[:12] == 0).all()


def test_padding_written_as_unsigned_for_signed_data() -> None:
    """Pixel Padding Value read as US 63536 for signed data means -2000."""
    pixels = phantom(bits=16, signed=True)
    pixels[:5] = -2000
    ds = _ds(pixels, bits=16, WindowCenter=0, WindowWidth=60000)
    ds.add_new(0x00280120, "US", 63536)
    out = radiographs_from_dataset(ds, "pad-us.dcm")[0].pixels
    assert (out[:5] == 0).all() and out[5:].min() > 0


def test_signed_bits_stored_below_allocated_with_garbage_high_bits() -> None:
    values = phantom(bits=12, signed=True)
    garbage = (values.astype(np.int64) & 0x0FFF) | 0x5000  # unused high bits set to junk
    ds = _ds(garbage.astype(np.uint16).view(np.int16), WindowCenter=0, WindowWidth=4096)
    clean = _ds(values, WindowCenter=0, WindowWidth=4096)
    ours = radiographs_from_dataset(ds, "junk.dcm")[0].pixels
    np.testing.assert_array_equal(ours, radiographs_from_dataset(clean, "clean.dcm")[0].pixels)
    _check(ds, "junk.dcm")  # pydicom also masks the unused bits


def test_unsigned_bits_stored_below_allocated() -> None:
    pixels = phantom(bits=10)
    _check(_ds(pixels, bits=10), "ten.dcm")
    _check(_ds(pixels, bits=10, WindowCenter=512, WindowWidth=600, VOILUTFunction="LINEAR_EXACT"), "ten.dcm")


def test_multiframe_each_frame_own_auto_window() -> None:
    frames = np.stack([phantom(bits=12, seed=1), phantom(bits=12, seed=2) // 4])
    out = _check(_ds(frames), "mf.dcm")
    assert out[0].max() == 255 and out[1].max() == 255


def test_eight_bit_and_constant_images() -> None:
    _check(_ds(phantom(bits=8), bits=8), "eight.dcm")
    flat = radiographs_from_dataset(_ds(np.full((8, 8), 7, np.uint16)), "flat.dcm")[0].pixels
    assert flat.shape == (8, 8) and len(np.unique(flat)) == 1


def test_lut_cached_per_header() -> None:
    ds = _ds(WindowCenter=100, WindowWidth=200)
    params = display_params(ds, pixel_info(ds, "a"), "a")
    again = display_params(_ds(WindowCenter=100, WindowWidth=200), pixel_info(ds, "b"), "b")
    assert params == again and hash(params) == hash(again)
    lut = display_lut(params, 16)
    assert display_lut(again, 16) is lut and lut.shape == (65536,) and lut.dtype == np.uint8
    assert not lut.flags.writeable


def test_file_and_dataset_agree(tmp_path) -> None:
    ds = _ds(WindowCenter=1500, WindowWidth=900)
    path = save(ds, tmp_path, "same.dcm")
    np.testing.assert_array_equal(
        read_radiographs(path)[0].pixels, radiographs_from_dataset(pydicom.dcmread(path), path)[0].pixels
    )


# --- resize -------------------------------------------------------------------------------------


def test_resize_stretch_shapes_and_dtype() -> None:
    image = np.random.default_rng(0).integers(0, 256, (300, 200), dtype=np.uint8)
    for size in ((224, 224), (512, 512), (100, 300)):
        out = resize(image, size, "stretch")
        assert out.shape == size and out.dtype == np.uint8


def test_resize_downscale_is_antialiased() -> None:
    checker = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = resize(checker, (64, 64), "stretch")
    assert np.abs(out.astype(int) - 128).max() <= 1  # INTER_AREA averages; nearest would alias
    np.testing.assert_array_equal(out, cv2.resize(checker, (64, 64), interpolation=cv2.INTER_AREA))


def test_resize_upscale_is_linear() -> None:
    image = np.array([[0, 255]], dtype=np.uint8)
    out = resize(image, (4, 8), "stretch")
    np.testing.assert_array_equal(out, cv2.resize(image, (8, 4), interpolation=cv2.INTER_LINEAR))


def test_letterbox_keeps_aspect_and_centres_on_black() -> None:
    image = np.full((200, 100), 200, np.uint8)  # tall
    out = resize(image, (224, 224), "letterbox")
    assert out.shape == (224, 224)
    columns = np.flatnonzero(out.max(axis=0))
    assert columns[0] == 56 and columns[-1] == 167  # 112 wide, centred
    assert (out[:, :56] == 0).all() and (out[:, 168:] == 0).all() and (out[:, 56:168] == 200).all()
    wide = resize(np.full((100, 300), 90, np.uint8), (90, 90), "letterbox")
    rows = np.flatnonzero(wide.max(axis=1))
    assert rows[0] == 30 and rows[-1] == 59


@pytest.mark.parametrize(
    ("size", "mode"), [((224, 224), "stretch"), ((224, 224), "letterbox"), ((97, 131), "stretch")]
)
def test_table_applied_while_resizing_matches_the_table_then_opencv_area(
    size: tuple[int, int], mode: ResizeMode
) -> None:
    """The one-pass resize of ``lut[values]`` against the two passes it replaced (full-size 8-bit
    image, then cv2.INTER_AREA) on synthetic radiographs of every storage variant and pydicom's
    files: at most 1 grey level apart (float rounding), nearly always equal."""
    from radserve.synthetic.dataset import REGIONS, synthetic_dataset

    rng = np.random.default_rng(5)
    radiographs = [
        radiograph
        for index in range(12)
        for radiograph in radiographs_from_dataset(
            synthetic_dataset(REGIONS[index % 5], rng, matrix=(int(rng.integers(240, 700)), 300)), "syn"
        )
    ]
    for name in ("CT_small.dcm", "MR_small_padded.dcm", "SC_rgb_rle.dcm", "examples_palette.dcm"):
        radiographs += read_radiographs(shipped(name))
    differing = 0
    for radiograph in radiographs:
        ours = radiograph.resized(size, mode)
        np.testing.assert_array_equal(ours, resize(radiograph.pixels, size, mode))  # same pass on grey
        reference = two_pass_reference(radiograph.pixels, size, mode)
        assert np.abs(ours.astype(int) - reference).max() <= 1
        differing += int((ours != reference).sum())
    assert differing <= 1e-3 * len(radiographs) * size[0] * size[1]


def two_pass_reference(image: np.ndarray, size: tuple[int, int], mode: ResizeMode) -> np.ndarray:
    """cv2.INTER_AREA (INTER_LINEAR to enlarge) of the display-ready image (letterbox: centred on black)."""
    height, width = size
    scale = min(height / image.shape[0], width / image.shape[1])
    inner = (
        (height, width)
        if mode == "stretch"
        else (round(image.shape[0] * scale), round(image.shape[1] * scale))
    )
    out = np.zeros(size, np.uint8)
    top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
    shrinking = inner[0] * inner[1] < image.size
    out[top : top + inner[0], left : left + inner[1]] = cv2.resize(
        image, inner[::-1], interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return out


def test_resize_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        resize(np.zeros((4, 4), np.uint16), (2, 2), "stretch")  # stored values need their table
    with pytest.raises(ValueError):
        resize(np.zeros((4, 4), np.uint16), (2, 2), "stretch", np.zeros(4096, np.uint8))
    with pytest.raises(ValueError):
        resize(np.zeros((4, 4), np.uint8), (2, 2), "crop")  # type: ignore[arg-type]


def test_in_memory_dataset_without_file_meta() -> None:
    """A data set built in memory (no File Meta) is taken as native little endian."""
    ds = _ds(WindowCenter=2048, WindowWidth=4096)
    expected = radiographs_from_dataset(ds, "with-meta")[0].pixels
    del ds.file_meta
    np.testing.assert_array_equal(radiographs_from_dataset(ds, "memory")[0].pixels, expected)


def test_display_bench_runs_and_compares_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from radserve.loadtests.display_bench import main

    assert main(["--matrix", "300", "240", "--size", "64", "--repeats", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["matrix"] == [300, 240] and len(report["one_pass_ms"]) == 2
    assert report["max_grey_level_difference"] <= 1 and report["speed_up"]["median"] > 0
