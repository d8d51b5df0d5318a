"""Input contracts: a radiograph model answers only for radiographs (header check before decoding)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage

from radserve.client.contract import ImageFacts, check_contract, read_accepted
from radserve.client.flow import prepare_file
from radserve.errors import InputError, ModelCardError, NotAcceptedError
from radserve.export.pipeline import ExportResult
from radserve.model_card import InputContract, ModelCard, OodFlag, RenderingPolicy
from radserve.server_config.triton import TritonServer
from radserve.synthetic.dataset import synthetic_dataset, write_synthetic_set
from tests._dicom_factory import HIGHDICOM_DX, shipped
from tests.test_end_to_end import TINY_MODEL, _classify

CARD = ModelCard(name="m", architecture="resnet18", labels=("a", "b"), input_size=(64, 64))
# Real instances shipped with pydicom, as a PACS export mixes them, and the attribute each fails on.
NON_RADIOGRAPHS = {
    "CT_small.dcm": "modality CT not in CR, DX",
    "MR_small.dcm": "modality MR not in CR, DX",
    "examples_ybr_color.dcm": "modality US not in CR, DX",  # multi-frame ultrasound
    "examples_palette.dcm": "modality US not in CR, DX",  # palette colour
    "JPEG2000.dcm": "modality NM not in CR, DX",  # nuclear medicine
    "SC_rgb_rle.dcm": "modality OT not in CR, DX",  # RGB secondary capture
}


def _radiograph(**changes: object) -> pydicom.Dataset:
    ds = synthetic_dataset("hand", np.random.default_rng(3), matrix=(64, 48))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def _refusal(ds: pydicom.Dataset, contract: InputContract = CARD.accepts) -> NotAcceptedError:
    with pytest.raises(NotAcceptedError) as refused:
        check_contract(ds, contract, "x.dcm")
    return refused.value


@pytest.mark.parametrize(("name", "message"), NON_RADIOGRAPHS.items())
def test_real_non_radiographs_are_refused_naming_field_and_value(name: str, message: str) -> None:
    with pytest.raises(NotAcceptedError, match=message) as refused:
        read_accepted(shipped(name), CARD.accepts)
    assert refused.value.reason == "modality"


def test_each_attribute_of_the_contract_has_its_own_reason() -> None:
    check_contract(_radiograph(), CARD.accepts, "x.dcm")  # a synthetic radiograph is inside
    sc = _refusal(_radiograph(SOPClassUID=SecondaryCaptureImageStorage))
    assert sc.reason == "sop_class" and "Secondary Capture Image Storage" in sc.detail
    rgb = _refusal(_radiograph(PhotometricInterpretation="RGB"))
    assert (rgb.reason, rgb.detail) == (
        "photometric",
        "photometric interpretation RGB not in MONOCHROME1, MONOCHROME2",
    )
    narrow = InputContract(body_parts=("CHEST",), view_positions=("PA", "AP"))
    assert _refusal(_radiograph(), narrow).detail == "body part HAND not in CHEST"
    lateral = _refusal(_radiograph(BodyPartExamined="CHEST", ViewPosition="LL"), narrow)
    assert (lateral.reason, lateral.detail) == ("view_position", "view position LL not in PA, AP")
    absent = _radiograph()
    del absent.Modality
    assert _refusal(absent).detail == "modality (absent) not in CR, DX"


@pytest.mark.parametrize(
    ("image_type", "refused"),
    [
        (["ORIGINAL", "PRIMARY", "LOCALIZER"], "LOCALIZER"),
        (["DERIVED", "SECONDARY"], "SECONDARY"),
        (["DERIVED", "PRIMARY"], None),  # processed For Presentation DX: accepted
        (["ORIGINAL", "PRIMARY"], None),
    ],
)
def test_localizers_and_secondary_images_are_refused_by_default(
    image_type: list[str], refused: str | None
) -> None:
    ds = _radiograph(ImageType=image_type)
    check_contract(ds, InputContract.any(), "x.dcm")
    if refused is None:
        check_contract(ds, CARD.accepts, "x.dcm")
        return
    refusal = _refusal(ds)
    assert (
        refusal.reason == "image_type"
        and refused in refusal.detail
        and "\\".join(image_type) in refusal.detail
    )
    check_contract(ds, InputContract(refused_image_types=()), "x.dcm")


def test_burned_in_annotation_and_lossy_compression_refused_when_the_card_says_so() -> None:
    strict = InputContract(refuse_burned_in_annotation=True, refuse_lossy_compression=True)
    burned, lossy = _radiograph(BurnedInAnnotation="YES"), _radiograph(LossyImageCompression="01")
    for ds in (burned, lossy):
        check_contract(ds, CARD.accepts, "x.dcm")  # accepted by default, recorded in the row
    assert _refusal(burned, strict).reason == "burned_in_annotation"
    assert _refusal(lossy, strict).reason == "lossy_compression"
    unknown = _radiograph()
    del unknown.BurnedInAnnotation
    assert "(absent)" in _refusal(unknown, strict).detail
    check_contract(_radiograph(BurnedInAnnotation="NO", LossyImageCompression="00"), strict, "x.dcm")
    assert ModelCard.from_json(CARD.replace(accepts=strict).to_json()).accepts == strict


def test_coded_sequences_stand_in_for_empty_free_text() -> None:
    """Body Part Examined and View Position are often empty or localised; the Anatomic Region Sequence
    (CID 4031) and View Code Sequence (CID 4010) say the same in codes."""
    knee_pa = InputContract(body_parts=("KNEE",), view_positions=("PA",))
    ds = _radiograph(BodyPartExamined="", ViewPosition="")
    ds.AnatomicRegionSequence = [_code("72696002", "SCT", "Knee")]
    ds.ViewCodeSequence = [_code("272479007", "SCT", "postero-anterior")]
    check_contract(ds, knee_pa, "x.dcm")
    ds.ViewCodeSequence = [_code("399067008", "SCT", "lateral")]
    assert _refusal(ds, knee_pa).detail == "view position LATERAL not in PA"
    ds.BodyPartExamined = "HAND"  # the free text, when present, wins
    assert _refusal(ds, knee_pa).detail == "body part HAND not in KNEE"


def test_prepared_rows_carry_laterality_burned_in_annotation_and_lossy_compression() -> None:
    (radiograph,) = prepare_file(HIGHDICOM_DX, CARD).radiographs
    assert radiograph.facts == ImageFacts("L", "NO", "00")


def _code(value: str, scheme: str, meaning: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_for_processing_is_refused_with_its_own_reason_unless_allowed() -> None:
    by_class = _radiograph(SOPClassUID=DigitalXRayImageStorageForProcessing, Modality="DX")
    by_intent = _radiograph(Modality="DX", PresentationIntentType="FOR PROCESSING")
    for ds in (by_class, by_intent):
        assert _refusal(ds).reason == "for_processing"
    check_contract(by_intent, InputContract(for_processing=True), "x.dcm")
    for ds in (by_class, by_intent, pydicom.dcmread(shipped("CT_small.dcm"))):
        check_contract(ds, InputContract.any(), "x.dcm")


def test_refusal_comes_before_decoding(tmp_path: Path) -> None:
    """A CT whose pixel data cannot be decoded is refused, not a decode failure: nothing was decoded."""
    ds = pydicom.dcmread(shipped("JPEG2000.dcm"))
    ds.PixelData = ds.PixelData[:40] + b"\0" * (len(ds.PixelData) - 40)
    ds.save_as(tmp_path / "broken-nm.dcm")
    refused = prepare_file(str(tmp_path / "broken-nm.dcm"), CARD)
    assert (refused.status, refused.error_reason) == ("not_accepted", "modality")
    anything = prepare_file(str(tmp_path / "broken-nm.dcm"), CARD.replace(accepts=InputContract.any()))
    assert (anything.status, anything.error_reason) == ("error", "decode_failed")
    with pytest.raises(InputError) as failed:
        read_accepted(tmp_path / "missing.dcm", CARD.accepts)
    assert not isinstance(failed.value, NotAcceptedError)


def test_cards_state_their_contract_and_old_cards_stay_readable(tmp_path: Path) -> None:
    card = CARD.replace(accepts=InputContract(modalities=("MR",), sop_classes=()), ood=OodFlag(0.4))
    assert ModelCard.from_json(card.to_json()) == card and card.ood_threshold == 0.4
    old = json.loads(CARD.to_json())
    del old["accepts"], old["ood"]
    assert (
        ModelCard.from_dict(old).accepts == InputContract() and ModelCard.from_dict(old).ood_threshold is None
    )


def test_cards_state_their_rendering_policy_and_old_cards_take_the_default() -> None:
    card = CARD.replace(rendering=RenderingPolicy(presentation_lut_conflict="refuse", voi_first="lut"))
    assert ModelCard.from_json(card.to_json()) == card
    assert json.loads(CARD.to_json())["rendering"] == {
        "presentation_lut_conflict": "photometric",
        "voi_first": "window",
        "voi_lut_depth": "data",
    }
    old = json.loads(CARD.to_json())
    del old["rendering"]
    assert ModelCard.from_dict(old).rendering == RenderingPolicy()
    with pytest.raises(ModelCardError, match="voi_first"):
        ModelCard.from_dict(old | {"rendering": {"voi_first": "both"}})


def test_prepare_applies_the_cards_rendering_policy(tmp_path: Path) -> None:
    """A MONOCHROME2 DX with Presentation LUT Shape INVERSE: the same wire image as without it and a
    note, or a refusal naming it when the card says refuse."""
    plain = _radiograph(WindowCenter=2048, WindowWidth=4096)
    plain.save_as(tmp_path / "plain.dcm")
    _radiograph(WindowCenter=2048, WindowWidth=4096, PresentationLUTShape="INVERSE").save_as(
        tmp_path / "inv.dcm"
    )
    expected = prepare_file(str(tmp_path / "plain.dcm"), CARD)
    followed = prepare_file(str(tmp_path / "inv.dcm"), CARD)
    assert plain.PhotometricInterpretation == "MONOCHROME2" and expected.radiographs[0].rendering_note == ""
    np.testing.assert_array_equal(followed.radiographs[0].image, expected.radiographs[0].image)
    assert "INVERSE contradicts MONOCHROME2" in followed.radiographs[0].rendering_note
    refused = prepare_file(
        str(tmp_path / "inv.dcm"), CARD.replace(rendering=RenderingPolicy(presentation_lut_conflict="refuse"))
    )
    assert (refused.status, refused.error_reason) == ("not_accepted", "presentation_lut_shape")
    assert str(tmp_path / "inv.dcm") in refused.error and refused.sop_instance_uid == plain.SOPInstanceUID


def test_export_flags_override_the_defaults() -> None:
    from radserve.cli import build_parser
    from radserve.cli._export import _contract

    def contract(*flags: str) -> InputContract | None:
        return _contract(build_parser().parse_args(["export", "m.pt", "--name", "m", *flags]))

    assert contract() is None  # the source card's (radiograph defaults)
    mr = contract("--accept-modality", "MR", "--accept-sop-class", "1.2.840.10008.5.1.4.1.1.4")
    assert mr == InputContract(modalities=("MR",), sop_classes=("1.2.840.10008.5.1.4.1.1.4",))
    assert contract("--accept-body-part", "--accept-for-processing") == InputContract(for_processing=True)
    assert contract("--accept-view-position", "PA").view_positions == ("PA",)


@pytest.fixture(scope="module")
def pacs_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A folder as a PACS export gives: real CT/MR/US/NM/palette/RGB instances, CR/DX radiographs, a
    DX For Processing image; and the paths of the radiographs."""
    folder = tmp_path_factory.mktemp("pacs")
    radiographs = [r.path for r in write_synthetic_set(folder / "xr", 4, seed=11, matrix=(160, 128))]
    conflict = _radiograph(PresentationLUTShape="INVERSE", SOPInstanceUID="1.2.826.0.1.3680043.10.543.77")
    conflict.save_as(folder / "dx-plut-inverse.dcm")
    radiographs += [
        str(folder / "dx-plut-inverse.dcm"),
        shutil.copy(HIGHDICOM_DX, folder / "highdicom-dx.dcm"),
    ]
    for name in NON_RADIOGRAPHS:
        shutil.copy(shipped(name), folder / name)
    processing = _radiograph(SOPClassUID=DigitalXRayImageStorageForProcessing, Modality="DX")
    processing.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForProcessing
    processing.save_as(folder / "dx-for-processing.dcm")
    return folder, radiographs


def _rows(path: Path) -> dict[str, list[dict[str, object]]]:
    rows: dict[str, list[dict[str, object]]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(Path(row["path"]).name, []).append(row)
    return rows


def test_mixed_folder_classifies_radiographs_and_refuses_the_rest(
    triton: TritonServer, tiny_export: ExportResult, pacs_export: tuple[Path, list[str]], tmp_path: Path
) -> None:
    folder, radiographs = pacs_export
    output, metrics = tmp_path / "rows.jsonl", tmp_path / "client.prom"
    done = _classify(triton, str(folder), "--output", str(output), "--metrics-file", str(metrics))
    assert done.returncode == 0, done.stderr
    rows = _rows(output)
    assert len(rows) == len(radiographs) + len(NON_RADIOGRAPHS) + 1  # one row per file
    threshold = tiny_export.card.ood_threshold
    assert threshold is not None and 0 < threshold <= 1
    for path in radiographs:
        (row,) = rows[Path(path).name]
        assert row["status"] == "ok" and row["accept_any"] is False
        assert row["ood"] is (row["score"] < threshold)
        assert ("INVERSE contradicts" in row["rendering_note"]) is (Path(path).name == "dx-plut-inverse.dcm")
        assert row["burned_in_annotation"] == "NO"
    assert rows["highdicom-dx.dcm"][0]["image_laterality"] == "L"
    for name, message in NON_RADIOGRAPHS.items():
        (row,) = rows[name]
        assert (row["status"], row["error_reason"], row["label"]) == ("not_accepted", "modality", "")
        assert row["error"].endswith(message)
    assert rows["dx-for-processing.dcm"][0]["error_reason"] == "for_processing"
    refused = len(NON_RADIOGRAPHS) + 1
    assert f"{len(radiographs)} radiographs classified" in done.stdout
    assert f"{refused} not accepted (for_processing 1, modality {len(NON_RADIOGRAPHS)})" in done.stdout
    assert f'radserve_radiographs_total{{model="{TINY_MODEL}",outcome="not_accepted"}} {refused}.0' in (
        metrics.read_text()
    )
    assert _classify(triton, str(folder), "--strict", "-q").returncode == 1


def test_accept_any_classifies_everything_and_says_so(
    triton: TritonServer, pacs_export: tuple[Path, list[str]], tmp_path: Path
) -> None:
    folder, radiographs = pacs_export
    output = tmp_path / "rows.jsonl"
    done = _classify(triton, str(folder), "--accept-any", "--output", str(output), "-q")
    assert done.returncode == 0, done.stderr
    rows = [row for group in _rows(output).values() for row in group]
    frames = pydicom.dcmread(shipped("examples_ybr_color.dcm"), stop_before_pixels=True).NumberOfFrames
    assert len(rows) == len(radiographs) + len(NON_RADIOGRAPHS) + 1 + int(frames) - 1
    assert all(row["status"] == "ok" and row["accept_any"] is True for row in rows)


def test_ood_rates_measures_both_sets(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from radserve.loadtests.ood_rates import main

    assert main(["--checkpoint", str(tiny_checkpoint), "--held-out", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["held_out_radiographs"]["count"] == 5 and 0 <= report["auroc"] <= 1
    names = report["non_radiographs"]["top_probability"]
    assert report["non_radiographs"]["count"] == len(names) and "CT_small.dcm[1]" in names
    assert not any(name.startswith("MR_small_") for name in names)  # one row per instance
