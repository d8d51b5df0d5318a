from __future__ import annotations

from pathlib import Path

import pytest

from radserve.errors import ModelCardError
from radserve.model_card import ModelCard

CARD = ModelCard(
    name="m", architecture="resnet18", labels=("a", "b"), input_size=(224, 192), resize="letterbox"
)


def test_json_round_trip_keeps_every_field(tmp_path: Path) -> None:
    card = CARD.replace(parity={"x": {"top1_agreement": 1.0}}, temperature=1.5)
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
