"""The description of a router: a first-stage classifier whose label picks the downstream model.

``radserve export-router`` writes it into the router's Triton config (parameter ``radserve.router``);
the router's ``model.py`` (a Python-backend BLS model) and the client read the same description.
Each stage is a served model pinned to one version, with its card: the client prepares one wire
tensor per distinct input contract (size and resize) from the same decoded radiograph, and the
router hands each stage exactly its own contract's tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from radserve.errors import ModelCardError
from radserve.model_card import INPUT_NAME, InputContract, ModelCard, RenderingPolicy

ROUTER_PARAMETER = "radserve.router"
# Outputs of a router beside ``probabilities`` (the downstream's, NaN past its class count).
FIRST_STAGE_OUTPUT = "first_probabilities"  # FP32 [C1]
DOWNSTREAM_OUTPUT = "downstream"  # INT32 [1]: index in RouterCard.downstream, -1 when unrouted
ROUTE_ERROR_OUTPUT = "route_error"  # BYTES [1]: why the downstream gave no answer ("" when it did)
ROUTER_OUTPUTS = (FIRST_STAGE_OUTPUT, DOWNSTREAM_OUTPUT, ROUTE_ERROR_OUTPUT)


def wire_input_name(card: ModelCard) -> str:
    """The router input carrying a stage's wire contract.

    Args:
        card: The stage's model card.

    Returns:
        The input name, e.g. ``image_384x384_letterbox``.
    """
    height, width = card.input_size
    return f"{INPUT_NAME}_{height}x{width}_{card.resize}"


@dataclass(frozen=True)
class Stage:
    """A served model the router calls, pinned to ``version``."""

    model: str
    version: str
    card: ModelCard

    @property
    def input(self) -> str:
        """The router input that carries this stage's wire images."""
        return wire_input_name(self.card)

    def to_dict(self) -> dict[str, Any]:
        """The stage as a JSON-ready dict, its card included."""
        return {
            "model": self.model,
            "version": self.version,
            "input": self.input,
            "card": self.card.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage:
        """The stage of a JSON object written by :meth:`to_dict`.

        Args:
            data: The object.

        Returns:
            The stage.

        Raises:
            ModelCardError: Its card is not valid.
        """
        return cls(str(data["model"]), str(data["version"]), ModelCard.from_dict(data["card"]))


@dataclass(frozen=True)
class RouterCard:
    """First stage, downstream models and the routing table (first-stage label → downstream model).

    Labels without a route are answered by the first stage alone. Refuses (:class:`ModelCardError`)
    a route from a label the first stage does not have, a route to a model that is not a downstream
    stage, and a stage that does not take one grey radiograph.
    """

    name: str
    first: Stage
    downstream: tuple[Stage, ...]
    routes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"router {self.name!r}"
        labels = self.first.card.labels
        for label, model in self.routes.items():
            if label not in labels:
                raise ModelCardError(
                    f"{where}: route for unknown label {label!r}; first stage {self.first.model!r} "
                    f"has labels {list(labels)}"
                )
            if model not in self.downstream_names:
                raise ModelCardError(f"{where}: route {label}={model} names no downstream stage")
        for stage in (self.first, *self.downstream):
            if stage.card.channels != 1:
                raise ModelCardError(
                    f"{where}: stage {stage.model!r} takes {stage.card.channels}-channel studies; "
                    "a router routes single radiographs"
                )
        if len(set(self.downstream_names)) != len(self.downstream):
            raise ModelCardError(f"{where}: a downstream model is listed twice")

    @property
    def downstream_names(self) -> tuple[str, ...]:
        """The downstream models' names, in stage order."""
        return tuple(stage.model for stage in self.downstream)

    @property
    def accepts(self) -> InputContract:
        """The first stage's input contract: what the router is asked about at all."""
        return self.first.card.accepts

    @property
    def rendering(self) -> RenderingPolicy:
        """The first stage's rendering policy: every stage sees the same decoded radiograph."""
        return self.first.card.rendering

    @property
    def wires(self) -> dict[str, ModelCard]:
        """One card per distinct wire input (the first stage's first), by router input name."""
        wires: dict[str, ModelCard] = {}
        for stage in (self.first, *self.downstream):
            wires.setdefault(stage.input, stage.card)
        return wires

    @property
    def width(self) -> int:
        """Columns of the router's ``probabilities``: the most classes of any downstream model."""
        return max((stage.card.num_classes for stage in self.downstream), default=1)

    def route(self, label: str) -> Stage | None:
        """The downstream stage of a first-stage label.

        Args:
            label: A label of the first stage.

        Returns:
            Its stage; None when the label has no route.
        """
        model = self.routes.get(label)
        return None if model is None else self.downstream[self.downstream_names.index(model)]

    def to_json(self) -> str:
        """The router card as its config parameter holds it."""
        return json.dumps(
            {
                "name": self.name,
                "first": self.first.to_dict(),
                "downstream": [stage.to_dict() for stage in self.downstream],
                "routes": self.routes,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RouterCard:
        """The router card of its config parameter.

        Args:
            text: The JSON text written by :meth:`to_json`.

        Returns:
            The router card.

        Raises:
            ModelCardError: The text is not a valid router card.
        """
        try:
            data = json.loads(text)
            return cls(
                name=str(data["name"]),
                first=Stage.from_dict(data["first"]),
                downstream=tuple(Stage.from_dict(stage) for stage in data["downstream"]),
                routes={str(label): str(model) for label, model in data["routes"].items()},
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ModelCardError(
                f"router description is not valid: {type(error).__name__}: {error}"
            ) from None
