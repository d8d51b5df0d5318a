"""The graph that is served: wire input in, probabilities out.

Decision 1 of the design: the wire carries the radiograph as one UINT8 grayscale channel. The
conversion to the network's normalized float RGB input and the temperature-scaled softmax are part
of the graph, so every runtime does them on its own device.
"""

from __future__ import annotations

import torch

from radserve.model_card import ModelCard


class ServingGraph(torch.nn.Module):
    """``uint8 [B, 1, H, W]`` → normalized float ``[B, 3, H, W]`` → network → softmax ``[B, C]``."""

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.network = network
        mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / (torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)
        self.inverse_temperature = 1.0 / card.temperature

    def normalized(self, image: torch.Tensor) -> torch.Tensor:
        """The network's input: ``uint8 [B, 1, H, W]`` → normalized float RGB ``[B, 3, H, W]``."""
        pixels = image.to(torch.float32).expand(-1, 3, -1, -1)
        return (pixels - self.mean) * self.scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.normalized(image))
        return torch.softmax(logits * self.inverse_temperature, dim=1)
