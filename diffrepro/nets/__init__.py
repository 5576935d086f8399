"""Network presets. `build_network(preset, ...)` returns the raw F; wrap it with a Preconditioning."""
from __future__ import annotations

from torch import nn

from ..presets import MLP_PRESETS, UNET_PRESETS
from .mlp import MLP
from .unet import SongUNet


def build_network(preset: str, *, img_resolution: int = 32, channels: int = 3, label_dim: int = 0,
                  **overrides) -> nn.Module:
    """Build F for images (U-Net presets) or vectors (MLP presets; `channels` is the dimension)."""
    if preset in UNET_PRESETS:
        cfg = {**UNET_PRESETS[preset], **overrides}
        return SongUNet(img_resolution=img_resolution, in_channels=channels, label_dim=label_dim, **cfg)
    if preset in MLP_PRESETS:
        cfg = {**MLP_PRESETS[preset], **overrides}
        return MLP(dim=channels, label_dim=label_dim, **cfg)
    raise ValueError(f"unknown network preset {preset!r}; choose one of "
                     f"{sorted(UNET_PRESETS) + sorted(MLP_PRESETS)}")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["build_network", "count_parameters", "UNET_PRESETS", "MLP_PRESETS", "SongUNet", "MLP"]
