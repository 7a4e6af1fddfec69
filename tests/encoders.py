"""A fixed random-weight encoder standing in for a VAE (usable from the CLI as
``--encoder tests.encoders:make_encoder``)."""

from __future__ import annotations

import torch


class TinyEncoder(torch.nn.Module):
    """A fixed random-weight conv encoder: 8x downsampling, 4 output channels.

    Stands in for a VAE encoder; its weights come from a fixed seed, so latents are repeatable.
    """

    def __init__(self, seed: int = 1234) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.convs = torch.nn.ModuleList([
            torch.nn.Conv2d(3, 8, 4, stride=2, padding=1),
            torch.nn.Conv2d(8, 8, 4, stride=2, padding=1),
            torch.nn.Conv2d(8, 4, 4, stride=2, padding=1),
        ])
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.3)
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
        return x * 2.0


def make_encoder(device: torch.device | str = "cpu") -> TinyEncoder:
    """Factory for ``python -m slb fit --encoder tests.conftest:make_encoder``."""
    return TinyEncoder().to(device).eval()
