"""Convolutions that run as matrix products on channels-last tensors (the `matmul_conv` speed path).

A channels-last (B, C, H, W) tensor is stored as a (B*H*W, C) matrix, so a 1x1 convolution is one
matrix product with the (C_out, C_in) weight, its bias in the product's epilogue, and no copy in or
out; in the U-Net the attention's q, k and v are then views of the (B*H*W, 3C) product. A 3x3
convolution of very few input channels (the U-Net's first layer, 3 channels) is far from what tensor
cores need; gathering its 3x3 neighbourhoods first (im2col, 27 columns padded to 32) turns it into one
product with a short inner dimension.

The same sums as nn.Conv2d (the tests compare against F.conv2d in float64); inputs that are not
channels-last take F.conv2d itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .norm import is_channels_last

IM2COL_MAX_COLUMNS = 64         # im2col only when C_in * k * k is at most this (the first layer)


def _channels_last_view(y: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) contiguous -> the (B, C, H, W) channels-last view of the same memory."""
    return y.permute(0, 3, 1, 2)


def _im2col(xh: torch.Tensor, k: int, columns: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, H, W, columns): each pixel's zero-padded k x k neighbourhood in (row,
    column, channel) order, then zero columns up to `columns`."""
    B, H, W, C = xh.shape
    p = k // 2
    xp = F.pad(xh, (0, 0, p, p, p, p))
    parts = [xp[:, i:i + H, j:j + W, :] for i in range(k) for j in range(k)]
    if columns > k * k * C:
        parts.append(xh.new_zeros(B, H, W, columns - k * k * C))
    return torch.cat(parts, dim=-1)


def has_matrix_product_form(conv: nn.Conv2d) -> bool:
    """Whether channels-last inputs of this convolution take a matrix product: stride 1, 'same' zero padding,
    one group, and a 1x1 kernel or few columns for im2col."""
    cout, cin, k, k2 = conv.weight.shape
    return (k == k2 and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros"
            and (k == 1 or cin * k * k <= IM2COL_MAX_COLUMNS))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=padding) for stride 1 and 'same' padding; a channels-last x takes a
    matrix product (1x1 kernels, or k x k kernels over few input channels)."""
    cout, cin, k, _ = weight.shape
    if is_channels_last(x) and 2 * padding + 1 == k and (k == 1 or cin * k * k <= IM2COL_MAX_COLUMNS):
        xh = x.permute(0, 2, 3, 1)                                  # (B, H, W, C_in), no copy
        if k == 1:
            return _channels_last_view(F.linear(xh, weight.reshape(cout, cin), bias))
        columns = -(-cin * k * k // 8) * 8                          # rows of 16 bytes in bf16
        w = F.pad(weight.permute(0, 2, 3, 1).reshape(cout, k * k * cin), (0, columns - k * k * cin))
        return _channels_last_view(F.linear(_im2col(xh, k, columns), w, bias))
    return F.conv2d(x, weight, bias, padding=padding)


class MatmulConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) whose channels-last inputs take `conv2d` above; swapped in
    only where has_matrix_product_form()."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.padding[0])
