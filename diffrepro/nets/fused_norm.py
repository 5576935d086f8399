"""Group norm + SiLU (+ dropout) in one GPU pass, for channels-last tensors.

    y = dropout(silu(GN(x + add)))          add: an optional per-(sample, channel) shift

Written out by torch.compile, a group norm reads its input twice (statistics, then normalization)
and its backward reads input and gradient twice more; dropout adds a mask written in the forward
pass and read in the backward pass. Here one program holds a whole (sample, groups) slab in
registers: the forward pass reads x once and writes y once, the backward pass reads x and dy once
and writes dx once, and the dropout mask is regenerated from a seed instead of stored. The
statistics are exact two-pass moments over the slab, in float32.

Used by norm.GroupNorm for CUDA channels-last inputs whose slab fits (H*W*C/G up to 16,384 values);
everything else takes the plain PyTorch path, which the tests compare this one against.
Set DIFFREPRO_FUSED_NORM=0 to turn it off.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

try:
    import triton
    import triton.language as tl
except ImportError:                                     # CPU-only installs: the plain path is used
    triton = None

MAX_SLAB = 16384        # values one program holds: (pixels, rounded up) x (channels per program)
TUNE: dict = {}         # overrides of the launch shape, for benchmarks


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def supported(x: torch.Tensor, num_groups: int) -> bool:
    """Whether the fused kernels take this input (else the caller uses the plain path)."""
    if triton is None or os.environ.get("DIFFREPRO_FUSED_NORM", "1") == "0":
        return False
    if not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1") or x.ndim != 4:
        return False
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    B, C, H, W = x.shape
    return C % num_groups == 0 and _next_pow2(H * W) * _next_pow2(C // num_groups) <= MAX_SLAB


def _blocks(HW: int, C: int, G: int):
    """Tile: all pixels (rounded up to a power of two) x GPB groups of CG channels, CG_P2 >= CG."""
    block_hw, cg = _next_pow2(HW), C // G
    cg_p2 = _next_pow2(cg)
    gpb = 1
    # more groups per program while the slab fits and a row stays within 64 channels (128 bytes)
    while gpb * 2 <= G and G % (gpb * 2) == 0 and block_hw * cg_p2 * gpb * 2 <= MAX_SLAB and cg_p2 * gpb * 2 <= 64:
        gpb *= 2
    num_warps = 16 if block_hw * cg_p2 * gpb >= 8192 else 8 if block_hw * cg_p2 * gpb >= 2048 else 4
    if TUNE:                                            # benchmarks/bench_norm.py --sweep
        gpb, num_warps = TUNE.get("gpb", gpb), TUNE.get("num_warps", num_warps)
    return block_hw, gpb, cg, cg_p2, num_warps


if triton is not None:
    @triton.jit
    def _slab(gb, b, HW, C, G, BLOCK_HW: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr,
              CG_P2: tl.constexpr):
        """Offsets of this program's slab of a (B, H, W, C) tensor as a (pixel, channel) tile, its mask,
        and the channel of each tile column (whose mask is cmask)."""
        hw = tl.arange(0, BLOCK_HW)[:, None]
        k = tl.arange(0, GPB * CG_P2)[None, :]
        if CG == CG_P2:                                  # the tile's channels are contiguous
            c = gb * (GPB * CG) + k
            cmask = c < C
        else:
            g = gb * GPB + k // CG_P2
            c = g * CG + k % CG_P2
            cmask = (k % CG_P2 < CG) & (g < G)
        offs = b.to(tl.int64) * HW * C + hw * C + c
        if BLOCK_HW == HW:
            mask = cmask
        else:
            mask = (hw < HW) & cmask
        return offs, mask, c, cmask

    @triton.jit
    def _group_mean(v, n, BLOCK_HW: tl.constexpr, GPB: tl.constexpr, CG_P2: tl.constexpr):
        """Per-group mean of a (pixel, channel) tile, broadcast back to a (1, channel) row."""
        per_group = tl.sum(tl.reshape(tl.sum(v, axis=0), (GPB, CG_P2)), axis=1) / n            # (GPB,)
        return tl.reshape(tl.broadcast_to(per_group[:, None], (GPB, CG_P2)), (GPB * CG_P2,))[None, :]

    @triton.jit
    def _gn_act_fwd(X, A, Wt, Bs, Y, Mean, Rstd, Seed, p, HW, C, G, eps,
                    HAS_ADD: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                    BLOCK_HW: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr, CG_P2: tl.constexpr):
        gb, b = tl.program_id(0), tl.program_id(1)
        offs, mask, c, cmask = _slab(gb, b, HW, C, G, BLOCK_HW, GPB, CG, CG_P2)
        z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_ADD:
            z = tl.where(mask, z + tl.load(A + b * C + c, mask=cmask, other=0.0).to(tl.float32), 0.0)
        n = HW * CG
        mean = _group_mean(z, n, BLOCK_HW, GPB, CG_P2)
        d = tl.where(mask, z - mean, 0.0)
        rstd = 1.0 / tl.sqrt(_group_mean(d * d, n, BLOCK_HW, GPB, CG_P2) + eps)
        u = d * rstd * tl.load(Wt + c, mask=cmask, other=0.0) + tl.load(Bs + c, mask=cmask, other=0.0)
        if SILU:
            u = u * tl.sigmoid(u)
        if DROPOUT:
            u = tl.where(tl.rand(tl.load(Seed), offs) >= p, u / (1.0 - p), 0.0)
        tl.store(Y + offs, u.to(Y.dtype.element_ty), mask=mask)
        # one value per group: the first channel of each group stores it
        first = (tl.arange(0, GPB * CG_P2) % CG_P2 == 0)[None, :] & cmask
        g = c // CG
        tl.store(Mean + b * G + g, mean, mask=first)
        tl.store(Rstd + b * G + g, rstd, mask=first)

    @triton.jit
    def _gn_act_bwd(DY, X, A, Wt, Bs, Mean, Rstd, Seed, p, DX, DA, DW, DB, HW, C, G,
                    HAS_ADD: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr,
                    BLOCK_HW: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr, CG_P2: tl.constexpr):
        gb, b = tl.program_id(0), tl.program_id(1)
        offs, mask, c, cmask = _slab(gb, b, HW, C, G, BLOCK_HW, GPB, CG, CG_P2)
        g = c // CG
        mean = tl.load(Mean + b * G + g, mask=cmask, other=0.0)
        rstd = tl.load(Rstd + b * G + g, mask=cmask, other=0.0)
        z = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_ADD:
            z = z + tl.load(A + b * C + c, mask=cmask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (z - mean) * rstd, 0.0)
        w = tl.load(Wt + c, mask=cmask, other=0.0)
        du = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)          # masked lanes: 0
        if DROPOUT:
            du = tl.where(tl.rand(tl.load(Seed), offs) >= p, du / (1.0 - p), 0.0)
        if SILU:                                                                # silu'(u) = s (1 + u (1 - s))
            u = xhat * w + tl.load(Bs + c, mask=cmask, other=0.0)
            s = tl.sigmoid(u)
            du = du * s * (1.0 + u * (1.0 - s))
        coffs = b * C + c                                                       # (1, channels)
        tl.store(DW + coffs, tl.sum(du * xhat, axis=0)[None, :], mask=cmask)    # summed over samples later
        tl.store(DB + coffs, tl.sum(du, axis=0)[None, :], mask=cmask)
        dxhat = du * w
        n = HW * CG
        m1 = _group_mean(dxhat, n, BLOCK_HW, GPB, CG_P2)
        m2 = _group_mean(dxhat * xhat, n, BLOCK_HW, GPB, CG_P2)
        dz = tl.where(mask, rstd * (dxhat - m1 - xhat * m2), 0.0)
        tl.store(DX + offs, dz.to(DX.dtype.element_ty), mask=mask)
        if HAS_ADD:
            tl.store(DA + coffs, tl.sum(dz, axis=0)[None, :], mask=cmask)


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def _empty_like(x, dtype=None):
    return torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device).contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("diffrepro::gn_act", mutates_args=())
def gn_act(x: torch.Tensor, add: Optional[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
           seed: Optional[torch.Tensor], num_groups: int, eps: float, silu: bool, p: float
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd); mean and rstd are per (sample, group), for the backward pass."""
    x = _channels_last(x)
    B, C, H, W = x.shape
    y = _empty_like(x)
    mean = torch.empty(B, num_groups, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    block_hw, gpb, cg, cg_p2, warps = _blocks(H * W, C, num_groups)
    _gn_act_fwd[(triton.cdiv(num_groups, gpb), B)](
        x, add if add is not None else x, weight, bias, y, mean, rstd, seed if seed is not None else mean, p,
        H * W, C, num_groups, eps, HAS_ADD=add is not None, SILU=silu, DROPOUT=p > 0,
        BLOCK_HW=block_hw, GPB=gpb, CG=cg, CG_P2=cg_p2, num_warps=warps)
    return y, mean, rstd


@gn_act.register_fake
def _(x, add, weight, bias, seed, num_groups, eps, silu, p):
    stats = x.new_empty(x.shape[0], num_groups, dtype=torch.float32)
    return _empty_like(x), stats, stats.clone()


@torch.library.custom_op("diffrepro::gn_act_backward", mutates_args=())
def gn_act_backward(dy: torch.Tensor, x: torch.Tensor, add: Optional[torch.Tensor], weight: torch.Tensor,
                    bias: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, seed: Optional[torch.Tensor],
                    num_groups: int, silu: bool, p: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, d add per (sample, channel), d weight, d bias); d add is empty without `add`."""
    x, dy = _channels_last(x), _channels_last(dy)
    B, C, H, W = x.shape
    dx = _empty_like(x)
    dw, db = (torch.empty(B, C, device=x.device, dtype=torch.float32) for _ in range(2))
    da = torch.empty(B, C, device=x.device, dtype=torch.float32) if add is not None else dw.new_empty(0)
    block_hw, gpb, cg, cg_p2, warps = _blocks(H * W, C, num_groups)
    _gn_act_bwd[(triton.cdiv(num_groups, gpb), B)](
        dy, x, add if add is not None else x, weight, bias, mean, rstd, seed if seed is not None else mean, p,
        dx, da if add is not None else dw, dw, db, H * W, C, num_groups,
        HAS_ADD=add is not None, SILU=silu, DROPOUT=p > 0,
        BLOCK_HW=block_hw, GPB=gpb, CG=cg, CG_P2=cg_p2, num_warps=warps)
    return dx, da.to(add.dtype) if add is not None else da, dw.sum(0).to(weight.dtype), db.sum(0).to(bias.dtype)


@gn_act_backward.register_fake
def _(dy, x, add, weight, bias, mean, rstd, seed, num_groups, silu, p):
    da = add.new_empty(add.shape) if add is not None else x.new_empty(0, dtype=torch.float32)
    return _empty_like(x), da, weight.new_empty(weight.shape), bias.new_empty(bias.shape)


def _setup_context(ctx, inputs, output):
    x, add, weight, bias, seed, num_groups, eps, silu, p = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, add, weight, bias, seed, mean, rstd)
    ctx.num_groups, ctx.silu, ctx.p = num_groups, silu, p


def _backward(ctx, dy, _dmean, _drstd):
    x, add, weight, bias, seed, mean, rstd = ctx.saved_tensors
    dx, da, dw, db = gn_act_backward(dy, x, add, weight, bias, mean, rstd, seed, ctx.num_groups, ctx.silu, ctx.p)
    return dx, (da if add is not None else None), dw, db, None, None, None, None, None


gn_act.register_autograd(_backward, setup_context=_setup_context)


def group_norm_act(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   add: Optional[torch.Tensor] = None, silu: bool = True, dropout: float = 0.0) -> torch.Tensor:
    """dropout(act(GN(x + add[:, :, None, None]))) through the fused kernels; see supported()."""
    seed = None
    if dropout > 0:
        seed = torch.randint(0, 2 ** 31 - 1, (1,), device=x.device, dtype=torch.int64)
    return gn_act(x, add, weight, bias, seed, num_groups, eps, silu, float(dropout))[0]
