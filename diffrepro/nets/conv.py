"""Convolutions that run as matrix products on channels-last tensors.

A channels-last (B, C, H, W) tensor is stored as a (B*H*W, C) matrix, so a 1x1 convolution is one
matrix product with the (C_out, C_in) weight, its bias in the product's epilogue, and no copy in or
out. Alone it runs as fast as cuDNN's kernel; in the U-Net its output is what attention needs: q, k
and v are views of the (B*H*W, 3C) product, with no layout copies (benchmarks/RESULTS.md). A 3x3
convolution of very few input channels (the U-Net's first layer, 3 channels) is far from what tensor
cores need; gathering its 3x3 neighbourhoods first (im2col, 27 columns padded to 32) turns it into one
product with a short inner dimension.

The same sums as nn.Conv2d (the tests compare against F.conv2d in float64); inputs that are not
channels-last take F.conv2d itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn

from . import conv_parts
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
    xp = nnf.pad(xh, (0, 0, p, p, p, p))
    parts = [xp[:, i:i + H, j:j + W, :] for i in range(k) for j in range(k)]
    if columns > k * k * C:
        parts.append(xh.new_zeros(B, H, W, columns - k * k * C))
    return torch.cat(parts, dim=-1)


def has_matrix_product_form(weight: torch.Tensor) -> bool:
    """Whether a channels-last input of this kernel takes a matrix product: 1x1, or few columns for im2col."""
    _, cin, k, _ = weight.shape
    return k == 1 or cin * k * k <= IM2COL_MAX_COLUMNS


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=padding) for stride 1 and 'same' padding; a channels-last x
    takes a matrix product (1x1 kernels, or k x k kernels over few input channels), and when sampling a
    large batch in half precision a 3x3 kernel may run over parts of the batch (conv_parts)."""
    cout, cin, k, _ = weight.shape
    if is_channels_last(x) and 2 * padding + 1 == k and has_matrix_product_form(weight):
        xh = x.permute(0, 2, 3, 1)                                  # (B, H, W, C_in), no copy
        if k == 1:
            return _channels_last_view(nnf.linear(xh, weight.reshape(cout, cin), bias))
        columns = -(-cin * k * k // 8) * 8                          # rows of 16 bytes in bf16
        w = nnf.pad(weight.permute(0, 2, 3, 1).reshape(cout, k * k * cin), (0, columns - k * k * cin))
        return _channels_last_view(nnf.linear(_im2col(xh, k, columns), w, bias))
    if conv_parts.supported(x, weight, padding):
        y = conv_parts.conv3x3(x, weight, padding)
        return y if bias is None else y + bias.to(y.dtype).view(1, -1, 1, 1)
    return nnf.conv2d(x, weight, bias, padding=padding)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict; stride 1, 'same' padding) whose channels-last
    inputs take `conv2d` above."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = self.kernel_size
        if (self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1 or k[0] != k[1]
                or self.padding != (k[0] // 2, k[0] // 2) or self.padding_mode != "zeros"):
            raise ValueError("Conv2d supports square kernels with stride 1, zero 'same' padding and one group only; "
                             "use nn.Conv2d for anything else")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.padding[0])


def upsampled_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.conv2d(nearest 2x upsampling of x, weight, bias, padding=1) for a 3x3 weight, without writing
    the upsampled input. Each of the output's four pixel phases (even/odd row, even/odd column) is a 2x2
    convolution of x itself: the 3x3 taps that land on the same input pixel are summed into one. The same
    sums in another order, with 4 products per output instead of 9."""
    B, _, H, W = x.shape
    w = weight
    # phase 0 reads input rows (i-1, i) with taps (w0, w1 + w2), phase 1 rows (i, i+1) with (w0 + w1, w2)
    rows = [torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2), torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2)]
    kernels = [[torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1), torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1)]
               for r in rows]
    # with padding 1 a 2x2 convolution's output r reads input rows (r-1, r): phase py is rows py .. py+H-1
    phases = [[nnf.conv2d(x, kernels[py][px], None, padding=1)[:, :, py:py + H, px:px + W] for px in (0, 1)]
              for py in (0, 1)]
    y = torch.stack([torch.stack(row, -1) for row in phases], -3).reshape(B, -1, 2 * H, 2 * W)   # interleave
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.contiguous(memory_format=torch.channels_last) if is_channels_last(x) else y
