"""Noise-level embeddings: positional (DDPM++) and random Fourier features (NCSN++)."""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of a scalar (EDM networks.py, endpoint=True), in float32
    (float64 for a float64 input)."""

    def __init__(self, num_channels: int, max_positions: int = 10000, endpoint: bool = True):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=x.dtype, device=x.device)
        freqs = freqs / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = x.outer(freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of a scalar (fixed, not trained)."""

    def __init__(self, num_channels: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.freqs.dtype).outer(2 * math.pi * self.freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


def build_embedding(kind: str, num_channels: int) -> nn.Module:
    if kind == "positional":
        return PositionalEmbedding(num_channels)
    if kind == "fourier":
        return FourierEmbedding(num_channels)
    raise ValueError(f"unknown noise embedding {kind!r}; choose 'positional' or 'fourier'")
