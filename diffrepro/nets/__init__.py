"""Network presets. `build_network(preset, ...)` returns the raw F; wrap it with a Preconditioning."""
from __future__ import annotations

from torch import nn

from .mlp import MLP
from .unet import SongUNet

# U-Net presets, smallest to EDM's CIFAR-10 DDPM++ (about 56M parameters at 32x32x3).
UNET_PRESETS = {
    "tiny": dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,), dropout=0.0),
    "small": dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,), dropout=0.1),
    "medium": dict(model_channels=64, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(16,), dropout=0.1),
    "ddpmpp-cifar": dict(model_channels=128, channel_mult=(2, 2, 2), num_blocks=4, attn_resolutions=(16,), dropout=0.13),
}
MLP_PRESETS = {
    "mlp-tiny": dict(width=64, depth=3),
    "mlp-small": dict(width=128, depth=3),
    "mlp-large": dict(width=512, depth=4),
}


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
