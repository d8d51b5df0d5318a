"""The graph that is served: wire input in, probabilities out.

Decision 1 of the design: the wire carries what the input is, as UINT8: one grayscale channel per
radiograph, or the MRI system's slice stack. The conversion to the network's normalized float input
(RGB replication for a radiograph), an average pooling when the network runs at a smaller size than
the wire (``ModelCard.network_input_size``) and the temperature-scaled softmax are part of the graph,
so every runtime does them on its own device.
"""

from __future__ import annotations

import torch

from radserve.model_card import ModelCard


class ServingGraph(torch.nn.Module):
    """``uint8 [B, C, H, W]`` → (pooled) normalized float ``[B, 3|C, h, w]`` → network → softmax ``[B, K]``.

    One wire channel is replicated to RGB and normalized per RGB channel; a stack of ``C > 1`` channels
    goes to the network as is, normalized with the card's mean and std averaged over RGB.
    """

    def __init__(self, network: torch.nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.network = network
        mean = torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        if card.channels > 1:
            mean, std = mean.mean().view(1, 1, 1, 1), std.mean().view(1, 1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("scale", 1.0 / std)
        self.replicate = card.channels == 1
        self.pooling = card.pooling
        self.inverse_temperature = 1.0 / card.temperature

    def normalized(self, image: torch.Tensor) -> torch.Tensor:
        """The network's input: ``uint8 [B, C, H, W]`` → normalized float (RGB for radiographs)."""
        pixels = image.to(torch.float32)
        if self.pooling > 1:
            pixels = torch.nn.functional.avg_pool2d(pixels, self.pooling)
        if self.replicate:
            pixels = pixels.expand(-1, 3, -1, -1)
        return (pixels - self.mean) * self.scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.network(self.normalized(image))
        return torch.softmax(logits * self.inverse_temperature, dim=1)
