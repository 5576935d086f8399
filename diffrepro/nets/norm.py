"""Group normalization that keeps a channels-last tensor channels-last.

PyTorch's group norm views x as (B, G, C/G * H * W); on a channels-last tensor that view is a copy
into NCHW order, and everything after it (the next convolution, its backward) converts back. Here
the same statistics come from per-channel moments, which reduce over H, W in whatever order the
tensor is stored, and are combined per group by the law of total variance (equal counts per
channel):

    mean_g = mean_c(mean_c)        var_g = mean_c(var_c) + mean_c((mean_c - mean_g)^2)

Mathematically identical to nn.GroupNorm (the tests compare values and gradients); used only for
channels-last 4-D inputs, which is what the fast GPU paths pass.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import nn

from . import fused_norm, norm_split


def is_channels_last(x: torch.Tensor) -> bool:
    """4-D and stored channels-last (not merely a shape where both layouts coincide)."""
    return x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def group_scale_shift(mean_c: torch.Tensor, var_c: torch.Tensor, num_groups: int, weight: torch.Tensor,
                      bias: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A group norm as y = x * scale + shift per (sample, channel), from each channel's mean and variance
    (B, C), combined per group by the law of total variance above."""
    B, C = mean_c.shape
    mean_c, var_c = mean_c.view(B, num_groups, -1), var_c.view(B, num_groups, -1)
    mean_g = mean_c.mean(-1, keepdim=True)                                     # (B, G, 1)
    var_g = var_c.mean(-1, keepdim=True) + (mean_c - mean_g).square().mean(-1, keepdim=True)
    # scale = w * rstd_g and shift = b - mean_g * scale
    scale = torch.rsqrt(var_g + eps) * weight.to(mean_c.dtype).view(1, num_groups, -1)
    shift = bias.to(mean_c.dtype).view(1, num_groups, -1) - mean_g * scale
    return scale.reshape(B, C), shift.reshape(B, C)


def group_norm_by_channel(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                          eps: float) -> torch.Tensor:
    acc = torch.promote_types(x.dtype, torch.float32)                         # statistics in >= fp32
    xf = x.to(acc)
    var_c, mean_c = torch.var_mean(xf, dim=(2, 3), correction=0)               # (B, C)
    scale, shift = group_scale_shift(mean_c, var_c, num_groups, weight, bias, eps)
    return (xf * scale[:, :, None, None] + shift[:, :, None, None]).to(torch.promote_types(x.dtype, weight.dtype))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and state dict) with the channels-last path above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.affine and is_channels_last(x):
            return group_norm_by_channel(x, self.num_groups, self.weight, self.bias, self.eps)
        return nnf.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def fused(self, x: torch.Tensor) -> bool:
        """Whether act() runs the fused kernels on x, or on an x-like tensor of num_channels channels."""
        return self.affine and is_channels_last(x) and fused_norm.supported(x, self.num_groups, self.num_channels)

    def takes_parts(self, parts: list[torch.Tensor]) -> bool:
        """Whether act_parts() runs fused kernels on these parts without concatenating them: fused_norm's
        where each part is whole groups, norm_split's where groups straddle parts."""
        return self.affine and (fused_norm.parts_supported(parts, self.num_groups)
                                or norm_split.supported(parts, self.num_groups))

    def act_parts(self, parts: list[torch.Tensor], silu: bool = True, moments: Optional[list] = None) -> torch.Tensor:
        """self.act(torch.cat(parts, 1), silu=silu), without writing the concatenation where takes_parts(),
        and without reading a part for its statistics where its moments are given (see skip_matmul). One
        part without moments takes act() itself."""
        if (len(parts) > 1 or any(m is not None for m in moments or [])) and self.affine:
            if fused_norm.parts_supported(parts, self.num_groups):
                return fused_norm.group_norm_act_parts(parts, self.num_groups, self.weight, self.bias, self.eps,
                                                       silu=silu, moments=moments)
            if len(parts) > 1 and norm_split.supported(parts, self.num_groups):
                return norm_split.group_norm_act(parts, self.num_groups, self.weight, self.bias, self.eps,
                                                 silu=silu, moments=moments)
        return self.act(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1), silu=silu)

    def act(self, x: torch.Tensor, add: Optional[torch.Tensor] = None, silu: bool = True,
            dropout: float = 0.0) -> torch.Tensor:
        """dropout(silu(self(x + add[:, :, None, None]))): one fused GPU kernel each way for
        channels-last CUDA inputs (fused_norm.py), the same ops one by one otherwise."""
        if self.fused(x):
            return fused_norm.group_norm_act(x, self.num_groups, self.weight, self.bias, self.eps,
                                             add=add, silu=silu, dropout=dropout)
        if add is not None:
            x = x + add[:, :, None, None]
        x = self(x)
        x = nnf.silu(x) if silu else x
        return nnf.dropout(x, dropout) if dropout > 0 else x
