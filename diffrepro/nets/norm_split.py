"""A group norm split into its statistics and its application, for inference:

    moments (per sample and channel) -> scale, shift (per sample and channel) -> act(x * scale + shift)

fused_norm's kernels own whole groups of one tensor. Two places in the U-Net need the norm taken apart:
- the last decoder block's input is a concatenation whose groups straddle its parts (256 + 128 channels
  in groups of 12). Here each part's per-channel moments come from one pass over it (or from the kernel
  that wrote it), the groups' statistics from those moments by the law of total variance
  (norm.group_scale_shift), and the normalized parts are written side by side: the concatenation of the
  inputs is never stored.
- a downsampling block pools the norm's output: here it is pooled as it is computed, and the block's
  input pooled for its skip in the same pass, so neither is written at full resolution;
- the output layer applies the norm inside its own kernel (out_head.py), from the scale and shift here.

Forward only (no gradient is wanted), CUDA (or Triton's interpreter) tensors stored channels-last; the
tests compare every path against float64.

DIFFREPRO_SPLIT_NORM=0 turns these paths off (with out_head.py). Measured on an H100 (benchmarks/RESULTS.md):
the output layer 2.84 -> 1.51 ms and the straddling norm 3.99 -> 2.36 ms per call at batch 2500, sampling
about 1% faster in all.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import fused_norm, norm

try:
    import triton
    import triton.language as tl
except ImportError:                                     # CPU-only installs: the plain path is used
    triton = None

# tiles of the moments and apply kernels: pixels, channels (128 bytes of each bf16 pixel), warps. On an H100
# at 2500 x 256 x 32 x 32 (benchmarks/bench_head.py) the moments take 0.48 ms against 0.43 for a plain sum,
# the application 0.89 against 0.87 for a plain copy.
ROWS = 64
CHANNELS = 64
WARPS = 4


def supported(parts: list[torch.Tensor], num_groups: int) -> bool:
    """Whether the split path takes these parts: not switched off (DIFFREPRO_SPLIT_NORM=0), CUDA (or the
    interpreter), one float dtype and shape but for channels, channels-last, whole groups in their
    concatenation, no gradient wanted."""
    if os.environ.get("DIFFREPRO_SPLIT_NORM", "1") == "0" or fused_norm.wants_grad(*parts):
        return False
    x = parts[0]
    # each part: Triton present, the fused norms not switched off, CUDA (or the interpreter), a float dtype,
    # 4-D (fused_norm's own checks; groups are checked on the concatenation here)
    return (sum(p.shape[1] for p in parts) % num_groups == 0
            and all(fused_norm.supported(p, 1) and p.shape[0] == x.shape[0] and p.shape[2:] == x.shape[2:]
                    and p.dtype == x.dtype and p.device == x.device
                    and p.is_contiguous(memory_format=torch.channels_last) for p in parts))


if triton is not None:
    @triton.jit
    def _moments_kernel(X, Mom, HW, C, ROWS: tl.constexpr, CHANNELS: tl.constexpr):
        """Per (sample, channel): the mean over the sample's pixels and the sum of squared deviations from
        it. Sums of deviations from the first tile's mean (no cancellation), kept per tile position and
        reduced once at the end."""
        cb, b = tl.program_id(0), tl.program_id(1)
        c = cb * CHANNELS + tl.arange(0, CHANNELS)
        cmask = c < C
        x = X + b.to(tl.int64) * HW * C
        hw = tl.arange(0, ROWS)
        mask = (hw < HW)[:, None] & cmask[None, :]
        v = tl.load(x + hw[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
        shift = tl.sum(v, axis=0) / tl.minimum(HW, ROWS)
        s1 = tl.zeros((ROWS, CHANNELS), tl.float32)
        s2 = tl.zeros((ROWS, CHANNELS), tl.float32)
        for start in range(0, HW, ROWS):
            hw = start + tl.arange(0, ROWS)
            mask = (hw < HW)[:, None] & cmask[None, :]
            z = tl.where(mask, tl.load(x + hw[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32)
                         - shift[None, :], 0.0)
            s1 += z
            s2 += z * z
        s1 = tl.sum(s1, axis=0)
        s2 = tl.sum(s2, axis=0)
        at = (b.to(tl.int64) * C + c) * 2
        tl.store(Mom + at, shift + s1 / HW, mask=cmask)
        tl.store(Mom + at + 1, s2 - s1 * s1 / HW, mask=cmask)

    @triton.jit
    def _apply_kernel(X, Scale, Shift, Y, HW, C, YC, c0, SILU: tl.constexpr, ROWS: tl.constexpr,
                      CHANNELS: tl.constexpr):
        """y[..., c0 + c] = act(x[..., c] * scale[c0 + c] + shift[c0 + c]) for a tile of one sample's pixels;
        y has YC channels, scale and shift are per (sample, channel of y)."""
        t, cb, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        hw = t * ROWS + tl.arange(0, ROWS)
        c = cb * CHANNELS + tl.arange(0, CHANNELS)
        cmask = c < C
        mask = (hw < HW)[:, None] & cmask[None, :]
        px = b.to(tl.int64) * HW + hw
        u = tl.load(X + px[:, None] * C + c[None, :], mask=mask, other=0.0).to(tl.float32) \
            * tl.load(Scale + b * YC + c0 + c, mask=cmask, other=0.0)[None, :] \
            + tl.load(Shift + b * YC + c0 + c, mask=cmask, other=0.0)[None, :]
        if SILU:
            u = u * tl.sigmoid(u)
        tl.store(Y + px[:, None] * YC + c0 + c[None, :], u.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _apply_pool_kernel(X, Scale, Shift, Y, XP, H, W, C, SILU: tl.constexpr, ROWS: tl.constexpr,
                           CHANNELS: tl.constexpr):
        """For a tile of one sample's 2x2-pooled pixels: y = the mean of act(x * scale + shift) over each 2x2
        block (a downsampling block's norm, then its box filter), and xp = the mean of x (its skip's input)."""
        t, cb, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        Ho, Wo = H // 2, W // 2
        q = t * ROWS + tl.arange(0, ROWS)
        c = cb * CHANNELS + tl.arange(0, CHANNELS)
        cmask = c < C
        mask = (q < Ho * Wo)[:, None] & cmask[None, :]
        scale = tl.load(Scale + b * C + c, mask=cmask, other=0.0)[None, :]
        shift = tl.load(Shift + b * C + c, mask=cmask, other=0.0)[None, :]
        top_left = b.to(tl.int64) * H * W + (q // Wo) * (2 * W) + (q % Wo) * 2
        y = tl.zeros((ROWS, CHANNELS), tl.float32)
        xp = tl.zeros((ROWS, CHANNELS), tl.float32)
        for dy in tl.static_range(2):
            for dx in tl.static_range(2):
                v = tl.load(X + (top_left + dy * W + dx)[:, None] * C + c[None, :], mask=mask, other=0.0)
                v = v.to(tl.float32)
                xp += v
                u = v * scale + shift
                if SILU:
                    u = u * tl.sigmoid(u)
                y += u
        out = (b.to(tl.int64) * Ho * Wo + q)[:, None] * C + c[None, :]
        tl.store(Y + out, (y * 0.25).to(Y.dtype.element_ty), mask=mask)
        tl.store(XP + out, (xp * 0.25).to(XP.dtype.element_ty), mask=mask)


if triton is not None:
    @triton.jit
    def _part_channel_stats(Mom, b, cp, valid, Cp, T, hw, T_P2: tl.constexpr):
        """Mean and variance over a sample's hw pixels of each channel cp of one part (moments (B, T, Cp, 2)
        over T blocks of hw / T pixels: law of total variance), and where cp is one of the part's channels."""
        inside = valid & (cp >= 0) & (cp < Cp)
        t = tl.arange(0, T_P2)[:, None]
        m = inside[None, :] & (t < T)
        at = ((b.to(tl.int64) * T + t) * Cp + cp[None, :]) * 2
        mean_t = tl.load(Mom + at, mask=m, other=0.0)
        m2_t = tl.load(Mom + at + 1, mask=m, other=0.0)
        mean = tl.sum(mean_t, axis=0) / T
        d = tl.where(m, mean_t - mean[None, :], 0.0)
        return mean, (tl.sum(m2_t, axis=0) + (hw // T) * tl.sum(d * d, axis=0)) / hw, inside

    @triton.jit
    def _scale_shift_kernel(Mom1, Mom2, Wt, Bs, Scale, Shift, C1, C2, T1, T2, hw, eps,
                            CG: tl.constexpr, CG_P2: tl.constexpr, T1_P2: tl.constexpr, T2_P2: tl.constexpr):
        """One (sample, group): its channels' means and variances from whichever part holds each channel
        (moments (B, T_p, C_p, 2) per part), then the group's by the law of total variance, then
        scale = w * rstd and shift = bias - mean * scale for each of its channels."""
        b, g = tl.program_id(0), tl.program_id(1)
        c = g * CG + tl.arange(0, CG_P2)
        valid = tl.arange(0, CG_P2) < CG
        mean1, var1, in1 = _part_channel_stats(Mom1, b, c, valid, C1, T1, hw, T1_P2)
        mean2, var2, in2 = _part_channel_stats(Mom2, b, c - C1, valid, C2, T2, hw, T2_P2)
        mean_c = tl.where(in1, mean1, tl.where(in2, mean2, 0.0))
        var_c = tl.where(in1, var1, tl.where(in2, var2, 0.0))
        mean_g = tl.sum(mean_c, axis=0) / CG
        dev = tl.where(valid, mean_c - mean_g, 0.0)
        var_g = (tl.sum(var_c, axis=0) + tl.sum(dev * dev, axis=0)) / CG
        scale = tl.rsqrt(var_g + eps) * tl.load(Wt + c, mask=valid, other=0.0).to(tl.float32)
        shift = tl.load(Bs + c, mask=valid, other=0.0).to(tl.float32) - mean_g * scale
        out = b.to(tl.int64) * (C1 + C2) + c
        tl.store(Scale + out, scale, mask=valid)
        tl.store(Shift + out, shift, mask=valid)


@torch.library.custom_op("diffrepro::channel_moments", mutates_args=())
def channel_moments(x: torch.Tensor) -> torch.Tensor:
    """x's per-channel moments over each sample's pixels, (B, 1, C, 2): mean and sum of squared deviations
    (the layout skip_matmul.residual_sum gives over blocks of pixels, here one block)."""
    x = x.contiguous(memory_format=torch.channels_last)
    B, C, H, W = x.shape
    mom = torch.empty(B, 1, C, 2, device=x.device, dtype=torch.float32)
    _moments_kernel[(triton.cdiv(C, CHANNELS), B)](x, mom, H * W, C, ROWS=ROWS, CHANNELS=CHANNELS, num_warps=WARPS)
    return mom


@channel_moments.register_fake
def _(x):
    return x.new_empty(x.shape[0], 1, x.shape[1], 2, dtype=torch.float32)


@torch.library.custom_op("diffrepro::norm_apply", mutates_args=())
def apply(parts: list[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor, silu: bool) -> torch.Tensor:
    """act(torch.cat(parts, 1) * scale + shift), scale and shift per (sample, channel): each part read once
    and written into its channels of the output."""
    parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
    B, _, H, W = parts[0].shape
    C = sum(p.shape[1] for p in parts)
    y = torch.empty(B, C, H, W, device=parts[0].device, dtype=parts[0].dtype, memory_format=torch.channels_last)
    scale, shift = scale.float().contiguous(), shift.float().contiguous()
    c0 = 0
    for p in parts:
        _apply_kernel[(triton.cdiv(H * W, ROWS), triton.cdiv(p.shape[1], CHANNELS), B)](
            p, scale, shift, y, H * W, p.shape[1], C, c0, SILU=silu, ROWS=ROWS, CHANNELS=CHANNELS, num_warps=WARPS)
        c0 += p.shape[1]
    return y


@apply.register_fake
def _(parts, scale, shift, silu):
    B, _, H, W = parts[0].shape
    return torch.empty(B, sum(p.shape[1] for p in parts), H, W, device=parts[0].device, dtype=parts[0].dtype,
                       memory_format=torch.channels_last)


def scale_shift_ops(moments: list[torch.Tensor], hw: int, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What _scale_shift_kernel computes, as PyTorch ops (any number of parts, any device)."""
    mean_c, m2_c = [], []
    for mom in moments:
        mean_t, m2_t = mom[..., 0], mom[..., 1]                     # (B, T, C_part)
        mean = mean_t.mean(1)
        # law of total variance over the T blocks of hw / T pixels each
        m2_c.append(m2_t.sum(1) + (hw // mom.shape[1]) * (mean_t - mean[:, None]).square().sum(1))
        mean_c.append(mean)
    return norm.group_scale_shift(torch.cat(mean_c, 1), torch.cat(m2_c, 1) / hw, num_groups, weight.float(),
                                  bias.float(), eps)


def _kernel_takes(moments: list[torch.Tensor]) -> bool:
    on_device = moments[0].is_cuda or os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and len(moments) <= 2 and on_device


@torch.library.custom_op("diffrepro::norm_scale_shift", mutates_args=())
def _scale_shift(moments: list[torch.Tensor], hw: int, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    # one kernel for one or two parts. Left to torch.compile, these small ops on (B, C) tensors became a
    # generated kernel that took over a millisecond for 2500 x 256 values; run one by one, some twenty launches.
    if not _kernel_takes(moments):
        return scale_shift_ops(moments, hw, num_groups, weight, bias, eps)
    B, C = moments[0].shape[0], sum(m.shape[2] for m in moments)
    cg = C // num_groups
    m1, m2 = moments[0].contiguous(), moments[-1].contiguous()
    c2, t2 = (m2.shape[2], m2.shape[1]) if len(moments) == 2 else (0, 1)
    scale, shift = (torch.empty(B, C, device=m1.device, dtype=torch.float32) for _ in range(2))
    _scale_shift_kernel[(B, num_groups)](
        m1, m2, weight, bias, scale, shift, m1.shape[2], c2, m1.shape[1], t2, hw, eps, CG=cg,
        CG_P2=fused_norm._next_pow2(cg), T1_P2=fused_norm._next_pow2(m1.shape[1]), T2_P2=fused_norm._next_pow2(t2),
        num_warps=1)
    return scale, shift


@_scale_shift.register_fake
def _(moments, hw, num_groups, weight, bias, eps):
    B, C = moments[0].shape[0], sum(m.shape[2] for m in moments)
    return moments[0].new_empty(B, C), moments[0].new_empty(B, C)


def scale_shift(moments: list[torch.Tensor], hw: int, num_groups: int, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The group norm of the parts' concatenation as y = x * scale + shift, per (sample, channel), from each
    part's moments (B, T, C_part, 2) over T equal blocks of its pixels."""
    return _scale_shift(list(moments), hw, num_groups, weight, bias, eps)


def moments_or_pass(x: torch.Tensor, moments: Optional[torch.Tensor]) -> torch.Tensor:
    """The moments that came with x, or one pass over x for them."""
    return moments if moments is not None else channel_moments(x)


def group_norm_act(parts: list[torch.Tensor], num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   silu: bool = True, moments: Optional[list] = None) -> torch.Tensor:
    """act(GN(torch.cat(parts, 1))), its groups free to straddle the parts, without reading a part for its
    statistics where its moments are given; see supported()."""
    moments = list(moments) if moments is not None else [None] * len(parts)
    B, _, H, W = parts[0].shape
    scale, shift = scale_shift([moments_or_pass(p, m) for p, m in zip(parts, moments)], H * W, num_groups,
                               weight, bias, eps)
    return apply(list(parts), scale, shift, silu)


@torch.library.custom_op("diffrepro::norm_apply_pool", mutates_args=())
def apply_pool(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, silu: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(avg_pool2d(act(x * scale + shift), 2), avg_pool2d(x, 2)), scale and shift per (sample, channel): x read
    once, and neither full-resolution result written."""
    x = x.contiguous(memory_format=torch.channels_last)
    B, C, H, W = x.shape
    y, xp = (torch.empty(B, C, H // 2, W // 2, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
             for _ in range(2))
    _apply_pool_kernel[(triton.cdiv(H // 2 * (W // 2), ROWS), triton.cdiv(C, CHANNELS), B)](
        x, scale.float().contiguous(), shift.float().contiguous(), y, xp, H, W, C, SILU=silu, ROWS=ROWS,
        CHANNELS=CHANNELS, num_warps=WARPS)
    return y, xp


@apply_pool.register_fake
def _(x, scale, shift, silu):
    B, C, H, W = x.shape
    return tuple(torch.empty(B, C, H // 2, W // 2, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
                 for _ in range(2))


def pool_supported(x: torch.Tensor, num_groups: int) -> bool:
    """Whether group_norm_act_pool takes x: supported([x]) and an even height and width."""
    return supported([x], num_groups) and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0


def group_norm_act_pool(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        silu: bool = True, moments: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(avg_pool2d(act(GN(x)), 2), avg_pool2d(x, 2)) in one pass over x (after the one for its statistics,
    unless its moments are given): a downsampling block's conv0 input and its skip's input."""
    B, C, H, W = x.shape
    scale, shift = scale_shift([moments_or_pass(x, moments)], H * W, num_groups, weight, bias, eps)
    return apply_pool(x, scale, shift, silu)
