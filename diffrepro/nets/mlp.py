"""MLP denoiser network for low-dimensional (2D toy) data."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn

from .embedding import build_embedding


class MLP(nn.Module):
    """F(x_in, c_noise): [x, sin/cos features of x, noise embedding] -> `depth` SiLU layers.

    Random Fourier features of the input (Tancik et al. 2020) let a small MLP form the sharp,
    radial structure of mixtures and manifolds quickly; `input_features=0` turns them off."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, emb_channels: int = 32,
                 embedding: str = "positional", label_dim: int = 0, input_features: int = 32,
                 input_scale: float = 2.0):
        super().__init__()
        self.map_noise = build_embedding(embedding, emb_channels)
        self.map_label = nn.Linear(label_dim, emb_channels) if label_dim else None
        self.register_buffer("in_freqs", torch.randn(dim, input_features // 2) * input_scale * 2 * math.pi)
        layers, cin = [], dim + input_features + emb_channels
        for _ in range(depth):
            layers.append(nn.Linear(cin, width))
            cin = width
        self.hidden = nn.ModuleList(layers)
        self.out = nn.Linear(cin, dim)
        nn.init.zeros_(self.out.bias)

    def forward(self, x, noise_labels, class_labels=None):
        emb = self.map_noise(noise_labels).to(x.dtype)
        if self.map_label is not None and class_labels is not None:
            emb = emb + self.map_label(class_labels.to(x.dtype))
        proj = x @ self.in_freqs.to(x.dtype)
        h = torch.cat([x, proj.sin(), proj.cos(), emb], dim=1)
        for layer in self.hidden:
            h = nnf.silu(layer(h))
        return self.out(h)
