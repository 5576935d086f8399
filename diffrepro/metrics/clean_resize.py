"""clean-fid's `clean` resize (PIL bicubic on float32 planes) recomputed with torch, bit for bit, batched.

PIL resizes a float32 ('F') image in two separable passes, horizontal then vertical. Each output pixel is
a double-precision sum, taken in order, of input pixels times double weights (Pillow's `precompute_coeffs`
with the bicubic kernel, a = -0.5, support 2, widened by the scale when shrinking), and each pass rounds
its result to float32. Doing exactly those multiplies and adds in float64, one tap at a time in the same
order (no fused multiply-add, no reordered sums), gives the same float32 bits on any IEEE device. So the
resize runs on the GPU next to the Inception network instead of on CPU workers, and the FID does not move:
tests compare it with PIL bit for bit.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

BICUBIC_A = -0.5
BICUBIC_SUPPORT = 2.0


def _bicubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * BICUBIC_A
    return 0.0


@functools.lru_cache(maxsize=32)
def pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bicubic resampling coefficients for one axis: (first input index (out,), weights (out, k)),
    zero-padded to a common k; computed with the same double arithmetic as Pillow's precompute_coeffs."""
    scale = filterscale = float(in_size) / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = BICUBIC_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, ksize), np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)       # C's (int) truncates toward zero, like int()
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for w in k:
            ww += w
        first[xx] = xmin
        weights[xx, :xmax] = [w / ww for w in k] if ww != 0.0 else k
    return first, weights


def _pass(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One PIL pass along `dim` of float32 planes: float64 sum over taps in order, rounded to float32."""
    in_size = x.shape[dim]
    if in_size == out_size:           # Pillow skips a pass that keeps the size
        return x
    first, weights = pil_coefficients(in_size, out_size)
    taps = weights.shape[1]
    idx = torch.from_numpy(np.minimum(first[:, None] + np.arange(taps), in_size - 1)).to(x.device)
    w = torch.from_numpy(weights).to(x.device)
    shape = [1] * x.ndim
    shape[dim] = out_size
    x64 = x.double()
    acc = torch.zeros((), dtype=torch.float64, device=x.device)
    for t in range(taps):
        # padded taps have weight 0 and add an exact 0.0, as Pillow's loop simply stops earlier
        acc = acc + torch.index_select(x64, dim, idx[:, t]) * w[:, t].view(shape)
    return acc.float()


def clean_resize_torch(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """uint8 images (N, C, H, W), C in {1, 3}, on any device -> float32 (N, 3, size, size) in [0, 255]:
    clean-fid's clean resize (gray replicated to RGB), bit-identical to PIL."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images.dtype} {tuple(images.shape)}")
    x = images.float()
    x = _pass(x, size, dim=3)         # PIL: horizontal first
    x = _pass(x, size, dim=2)         # then vertical, on the float32 intermediate
    x = x.clamp_(0, 255)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
