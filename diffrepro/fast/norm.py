"""Group normalization that keeps a channels-last tensor channels-last, and the norm + SiLU + dropout
that the fast U-Net block calls.

PyTorch's group norm views x as (B, G, C/G * H * W); on a channels-last tensor that view is a copy
into NCHW order, and everything after it (the next convolution, its backward) converts back. Here
the same statistics come from per-channel moments, which reduce over H, W in whatever order the
tensor is stored, and are combined per group by the law of total variance (equal counts per
channel):

    mean_g = mean_c(mean_c)        var_g = mean_c(var_c) + mean_c((mean_c - mean_g)^2)

Mathematically identical to nn.GroupNorm (the tests compare values and gradients in float64). Where
the `fused_norm` path is on and its kernel takes the tensor (fused_norm.supported), norm, SiLU and
dropout run as one kernel each way instead.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import fused_norm


def is_channels_last(x: torch.Tensor) -> bool:
    """4-D and stored channels-last (not merely a shape where both layouts coincide)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def group_norm_by_channel(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                          eps: float) -> torch.Tensor:
    """F.group_norm(x, ...) from per-channel moments (see above); statistics in at least float32."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    var_c, mean_c = torch.var_mean(xf, dim=(2, 3), correction=0)               # (B, C)
    B, C = mean_c.shape
    mean_c, var_c = mean_c.view(B, num_groups, -1), var_c.view(B, num_groups, -1)
    mean_g = mean_c.mean(-1, keepdim=True)                                     # (B, G, 1)
    var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).square().mean(-1, keepdim=True)
    scale = torch.rsqrt(var_g + eps) * weight.to(acc).view(1, num_groups, -1)   # y = x * scale + shift
    shift = bias.to(acc).view(1, num_groups, -1) - mean_g * scale
    y = xf * scale.reshape(B, C, 1, 1) + shift.reshape(B, C, 1, 1)
    return y.to(torch.promote_types(x.dtype, weight.dtype))


def group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """norm(x), by channel for a channels-last x."""
    if norm.affine and is_channels_last(x):
        return group_norm_by_channel(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)


def group_norm_act(norm: nn.GroupNorm, x: torch.Tensor, fused: bool, add: Optional[torch.Tensor] = None,
                   silu: bool = True, dropout: float = 0.0) -> torch.Tensor:
    """dropout(silu(norm(x + add[:, :, None, None]))): one kernel each way where `fused` and the kernel takes x,
    the same ops one by one otherwise."""
    if fused and norm.affine and fused_norm.supported(x, norm.num_groups):
        return fused_norm.group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps,
                                         add=add, silu=silu, dropout=dropout)
    if add is not None:
        x = x + add[:, :, None, None].to(x.dtype)
    x = group_norm(norm, x)
    x = F.silu(x) if silu else x
    return F.dropout(x, dropout) if dropout > 0 else x


class FastGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) by channel on channels-last tensors, through the fused
    kernel where `fused`."""

    fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_act(self, x, self.fused, silu=False)
