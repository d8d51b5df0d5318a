from __future__ import annotations

from pathlib import Path

import pytest

from radserve.errors import ModelCardError
from radserve.model_card import ModelCard, ParityRecord, ParityReport

CARD = ModelCard(
    name="m", architecture="resnet18", labels=("a", "b"), input_size=(224, 192), resize="letterbox"
)
# cards as export wrote them while parity, calibration, ood and operating points were plain JSON objects
OLD_CARDS = Path(__file__).parent / "data"


def test_json_round_trip_keeps_every_field(tmp_path: Path) -> None:
    report = ParityReport("pytorch fp32", 8, 1.0, 1e-6, 2e-6)
    card = CARD.replace(parity=ParityRecord({"x": report}), temperature=1.5)
    card.write(tmp_path)
    assert ModelCard.read(tmp_path) == card
    assert ModelCard.from_json(card.to_json()).input_size == (224, 192)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": ()}, "no labels"),
        ({"labels": ("a", "a")}, "duplicate labels"),
        ({"input_size": (8, 8)}, "out of range"),
        ({"resize": "crop"}, "letterbox or stretch"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_invalid_cards_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ModelCardError, match=message):
        CARD.replace(**changes)


def test_missing_fields_and_bad_json_are_named() -> None:
    with pytest.raises(ModelCardError, match="lacks"):
        ModelCard.from_dict({"name": "m"})
    with pytest.raises(ModelCardError, match="not valid JSON"):
        ModelCard.from_json("{")


@pytest.mark.parametrize("name", ["model_card_classifier_v1.json", "model_card_detector_v1.json"])
def test_cards_written_before_the_typed_records_load_and_write_back_unchanged(name: str) -> None:
    text = (OLD_CARDS / name).read_text()
    card = ModelCard.from_json(text)
    assert card.to_json() + "\n" == text
    if card.task == "detection":
        (entry,) = card.parity.detections.values()
        assert entry.matched == entry.compared > 0 and not card.parity.runtimes
        return
    assert card.parity.runtimes["onnxruntime_int8"].quantization.startswith("QDQ")
    assert card.parity.gradcam is not None and card.parity.gradcam.min_pearson > 0.99
    assert card.calibration is not None and card.calibration.ece_after < card.calibration.ece_before
    assert card.ood is not None and card.ood_threshold == card.ood.threshold
    assert card.decide({"normal": 0.55, "fracture": 0.45}) == (
        "fracture",
        card.operating_points["fracture"].threshold,
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("calibration", {"n": 60}, r"calibration: lacks \['ece_after'"),
        ("ood", {"score": "max_softmax"}, r"out-of-distribution flag: lacks \['threshold'\]"),
        (
            "operating_points",
            {"a": {"threshold": 0.5, "cutoff": 1}},
            r"operating point: unknown fields \['cutoff'\]",
        ),
        ("parity", {"onnxruntime_fp32": {"samples": 8}}, "parity report: lacks"),
    ],
)
def test_an_incomplete_record_is_named(field: str, value: object, message: str) -> None:
    data = CARD.to_dict() | {field: value}
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_dict(data)
