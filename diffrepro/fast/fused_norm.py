"""Group norm + SiLU (+ dropout) as one GPU kernel each way, for channels-last tensors.

    y = dropout(silu(GN(x + add)))          add: an optional per-(sample, channel) shift

Written out by torch.compile, a group norm is a statistics kernel and a normalization kernel, its
backward two more, each reading whatever neighbouring pointwise work it fused, and dropout stores a
mask in the forward pass that the backward pass reads. Here one program owns whole groups of one
sample. When its slab (all pixels x its channels) fits one tile, it is read once and kept in registers,
with exact two-pass statistics; otherwise the program walks its pixels twice in tiles of 32 channels
(64 contiguous bytes of each bf16 pixel), once for float32 sums shifted by a first estimate of each
channel's mean, once to write the output. The backward kernel does the same with x and dy. Channel
statistics are combined per group by the law of total variance (as in norm.py). The dropout mask is
regenerated from a seed (a hash of each element's index), never stored.

The `fused_norm` speed path (diffrepro/fast/unet.py) calls it for channels-last CUDA tensors; everything
else takes the plain PyTorch ops, which the tests compare it against (float64, on the CPU through Triton's
interpreter with TRITON_INTERPRET=1).
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

# Launch shapes, from a sweep over DDPM++'s activations on an H100 (benchmarks/sweep_norm.py): tiles of
# about 32 values per thread; a slab of at most RESIDENT values (RESIDENT_BWD in the backward pass,
# which keeps x and dy) is loaded once and kept in registers, larger slabs are walked twice in tiles
# of TILE values (TILE_DROPOUT with dropout, whose hash needs registers too) across CHANNELS channels.
RESIDENT = 4096
RESIDENT_BWD = 16384
RESIDENT_TILE = 4096    # values per resident program, when several groups fit
CHANNELS = 32           # tiled programs: channels (whole groups), 64 bytes of each pixel in bf16
TILE = 8192
TILE_DROPOUT = 4096
ZERO_SHIFT = True       # tiled forward without a shift: run the kernel with a zero shift (see _forward)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def supported(x: torch.Tensor, num_groups: int) -> bool:
    """Whether the fused kernels take this input (else the caller uses the plain ops): a channels-last 4-D
    CUDA tensor (any device under Triton's interpreter) of a floating dtype, whole groups."""
    if triton is None or x.ndim != 4 or not (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
        return False
    return (x.dtype in (torch.float32, torch.bfloat16, torch.float16) and x.shape[1] % num_groups == 0
            and x.is_contiguous(memory_format=torch.channels_last))


def _blocks(HW: int, C: int, G: int, backward: bool = False, dropout: bool = False):
    """Launch shape: BLOCK pixels x GPB groups of CG channels (CG_P2 >= CG, a power of two), warps,
    and whether one tile holds the program's whole slab (read once, kept in registers)."""
    cg = C // G
    cg_p2 = _next_pow2(cg)
    hw_p2 = _next_pow2(HW)
    min_channels = max(cg_p2, 8 if backward else 16)
    if hw_p2 * min_channels <= (RESIDENT_BWD if backward else RESIDENT):
        channels = max(min_channels, min(_next_pow2(C), RESIDENT_TILE // hw_p2))
        block = hw_p2
    else:
        channels = max(cg_p2, CHANNELS)
        block = min(hw_p2, max(16, (TILE_DROPOUT if dropout or backward else TILE) // channels))
    gpb = max(1, min(_next_pow2(G), channels // cg_p2))
    while cg == cg_p2 and G % gpb:                          # whole groups in every program
        gpb //= 2
    num_warps = max(4, min(16, block * gpb * cg_p2 // 1024)) if block >= HW else 8
    return block, gpb, cg, cg_p2, num_warps, block >= HW


if triton is not None:
    @triton.jit
    def _chunk(start, gb, b, HW, C, G, BLOCK: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr,
               CG_P2: tl.constexpr):
        """Offsets of pixels start..start+BLOCK, this program's channels, of a (B, H, W, C) tensor as a
        (pixel, channel) tile, its mask, and the channel of each column (valid where cmask)."""
        hw = start + tl.arange(0, BLOCK)[:, None]
        k = tl.arange(0, GPB * CG_P2)[None, :]
        if CG == CG_P2:                # contiguous channels, all valid (GPB divides G): vector loads
            c = gb * (GPB * CG) + k
            cmask = k < GPB * CG
        else:
            g = gb * GPB + k // CG_P2
            c = g * CG + k % CG_P2
            cmask = (k % CG_P2 < CG) & (g < G)
        return b.to(tl.int64) * HW * C + hw * C + c, (hw < HW) & cmask, c, cmask

    @triton.jit
    def _per_group(v, GPB: tl.constexpr, CG_P2: tl.constexpr):
        """Sum over the channels of each group of a (1, channel) row, broadcast back to the row."""
        g = tl.sum(tl.reshape(v, (GPB, CG_P2)), axis=1)
        return tl.reshape(tl.broadcast_to(g[:, None], (GPB, CG_P2)), (1, GPB * CG_P2))

    @triton.jit
    def _fmix(h):
        """MurmurHash3's 32-bit finalizer: a bijection that mixes every input bit into every output bit."""
        h ^= h >> 16
        h *= 0x85EBCA6B
        h ^= h >> 13
        h *= 0xC2B2AE35
        h ^= h >> 16
        return h

    @triton.jit
    def _keep(Seed, offs, p):
        """Dropout's keep mask: a keyed hash of each element's index, uniform in [0, 1), >= p. A few
        integer operations per element (Philox, tl.rand, costs several times more and dominated the kernels)."""
        seed = tl.load(Seed)
        k1 = _fmix((seed & 0xFFFFFFFF).to(tl.uint32) ^ 0x9E3779B9)                # per-call keys
        k2 = _fmix(((seed >> 32) & 0xFFFFFFFF).to(tl.uint32) ^ k1)
        h = _fmix(((offs & 0xFFFFFFFF).to(tl.uint32) ^ k1) * 0x9E3779B1 ^ ((offs >> 32).to(tl.uint32) + k2))
        return (h >> 8).to(tl.float32) * (1.0 / 16777216.0) >= p

    @triton.jit
    def _gn_act_fwd(X, A, Wt, Bs, Y, Mean, Rstd, Seed, p, HW, C, G, eps,
                    HAS_ADD: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr, RESIDENT: tl.constexpr,
                    BLOCK: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr, CG_P2: tl.constexpr):
        gb, b = tl.program_id(0), tl.program_id(1)
        offs, mask, c, cmask = _chunk(0, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
        a = tl.load(A + b * C + c, mask=cmask, other=0.0).to(tl.float32) if HAS_ADD else 0.0
        if RESIDENT:
            z = tl.where(mask, tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a, 0.0)
            # the whole slab is z: per-channel mean, then squared deviations from it (two passes in registers)
            mean_c = tl.sum(z, axis=0)[None, :] / HW
            d = tl.where(mask, z - mean_c, 0.0)
            m2_c = tl.where(cmask, tl.sum(d * d, axis=0)[None, :], 0.0)
        else:
            # pass 1: per-channel sums, shifted by the first chunk's channel means (no cancellation)
            z = tl.where(mask, tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a, 0.0)
            shift = tl.sum(z, axis=0)[None, :] / tl.minimum(HW, BLOCK)
            s1 = tl.zeros((BLOCK, GPB * CG_P2), tl.float32)
            s2 = tl.zeros((BLOCK, GPB * CG_P2), tl.float32)
            for start in range(0, HW, BLOCK):
                offs, mask, c, cmask = _chunk(start, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
                zs = tl.where(mask, tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a - shift, 0.0)
                s1 += zs
                s2 += zs * zs
            s1 = tl.sum(s1, axis=0)[None, :]
            s2 = tl.sum(s2, axis=0)[None, :]
            mean_c = shift + s1 / HW
            m2_c = tl.where(cmask, s2 - s1 * s1 / HW, 0.0)
        # per channel: mean and sum of squared deviations; per group: law of total variance
        mean = _per_group(tl.where(cmask, mean_c, 0.0), GPB, CG_P2) / CG
        dev = tl.where(cmask, mean_c - mean, 0.0)
        var = (_per_group(m2_c, GPB, CG_P2) + HW * _per_group(dev * dev, GPB, CG_P2)) / (HW * CG)
        rstd = 1.0 / tl.sqrt(var + eps)
        scale = rstd * tl.load(Wt + c, mask=cmask, other=0.0)
        shift = tl.load(Bs + c, mask=cmask, other=0.0) - mean * scale
        if RESIDENT:                                    # offs and mask are still the slab's
            _gn_act_store(Y, Seed, p, offs, mask, z * scale + shift, SILU, DROPOUT)
        else:
            # pass 2: y = act(x * scale + shift), dropout
            shift += a * scale
            for start in range(0, HW, BLOCK):
                offs, mask, c, cmask = _chunk(start, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
                u = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) * scale + shift
                _gn_act_store(Y, Seed, p, offs, mask, u, SILU, DROPOUT)
        first = (tl.arange(0, GPB * CG_P2) % CG_P2 == 0)[None, :] & cmask    # one store per group
        tl.store(Mean + b * G + c // CG, mean, mask=first)
        tl.store(Rstd + b * G + c // CG, rstd, mask=first)

    @triton.jit
    def _gn_act_store(Y, Seed, p, offs, mask, u, SILU: tl.constexpr, DROPOUT: tl.constexpr):
        """Store dropout(act(u)) at Y + offs; the dropout mask hashes the offsets."""
        if SILU:
            u = u * tl.sigmoid(u)
        if DROPOUT:
            u = tl.where(_keep(Seed, offs, p), u / (1.0 - p), 0.0)
        tl.store(Y + offs, u.to(Y.dtype.element_ty), mask=mask)

    @triton.jit
    def _grad_u(DY, Seed, p, offs, mask, xhat, w, bias, SILU: tl.constexpr, DROPOUT: tl.constexpr):
        """d loss / d u, u = xhat * w + bias the affine group-norm output, from dy (0 where masked)."""
        du = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        if DROPOUT:
            du = tl.where(_keep(Seed, offs, p), du / (1.0 - p), 0.0)
        if SILU:                                                                # silu'(u) = s (1 + u (1 - s))
            u = xhat * w + bias
            s = tl.sigmoid(u)
            du = du * s * (1.0 + u * (1.0 - s))
        return du

    @triton.jit
    def _gn_act_bwd(DY, X, A, Wt, Bs, Mean, Rstd, Seed, p, DX, DA, DW, DB, HW, C, G,
                    HAS_ADD: tl.constexpr, SILU: tl.constexpr, DROPOUT: tl.constexpr, RESIDENT: tl.constexpr,
                    BLOCK: tl.constexpr, GPB: tl.constexpr, CG: tl.constexpr, CG_P2: tl.constexpr):
        gb, b = tl.program_id(0), tl.program_id(1)
        offs, mask, c, cmask = _chunk(0, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
        mean = tl.load(Mean + b * G + c // CG, mask=cmask, other=0.0)
        rstd = tl.load(Rstd + b * G + c // CG, mask=cmask, other=0.0)
        a = tl.load(A + b * C + c, mask=cmask, other=0.0).to(tl.float32) if HAS_ADD else 0.0
        w = tl.load(Wt + c, mask=cmask, other=0.0)
        bias = tl.load(Bs + c, mask=cmask, other=0.0)
        # pass 1: per-channel sums of du and du * xhat (the bias and weight gradients)
        if RESIDENT:                                    # the whole slab: xhat and du stay in registers
            xhat = tl.where(mask, (tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a - mean) * rstd, 0.0)
            du = _grad_u(DY, Seed, p, offs, mask, xhat, w, bias, SILU, DROPOUT)
            s_du = tl.sum(du, axis=0)[None, :]
            s_dux = tl.sum(du * xhat, axis=0)[None, :]
        else:
            s_du = tl.zeros((BLOCK, GPB * CG_P2), tl.float32)
            s_dux = tl.zeros((BLOCK, GPB * CG_P2), tl.float32)
            for start in range(0, HW, BLOCK):
                offs, mask, c, cmask = _chunk(start, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
                xhat = tl.where(mask, (tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a - mean) * rstd, 0.0)
                du = _grad_u(DY, Seed, p, offs, mask, xhat, w, bias, SILU, DROPOUT)
                s_du += du
                s_dux += du * xhat
            s_du = tl.sum(s_du, axis=0)[None, :]
            s_dux = tl.sum(s_dux, axis=0)[None, :]
        tl.store(DB + b * C + c, s_du, mask=cmask)                              # summed over samples later
        tl.store(DW + b * C + c, s_dux, mask=cmask)
        # dx = rstd (dxhat - mean_g(dxhat) - xhat mean_g(dxhat xhat)), dxhat = du * w
        n = HW * CG
        m1 = _per_group(w * s_du, GPB, CG_P2) / n
        m2 = _per_group(w * s_dux, GPB, CG_P2) / n
        if RESIDENT:                                    # offs and mask are still the slab's
            dz = tl.where(mask, rstd * (du * w - m1 - xhat * m2), 0.0)
            tl.store(DX + offs, dz.to(DX.dtype.element_ty), mask=mask)
            if HAS_ADD:
                tl.store(DA + b * C + c, tl.sum(dz, axis=0)[None, :], mask=cmask)
        else:
            s_dx = tl.zeros((BLOCK, GPB * CG_P2), tl.float32)
            for start in range(0, HW, BLOCK):
                offs, mask, c, cmask = _chunk(start, gb, b, HW, C, G, BLOCK, GPB, CG, CG_P2)
                xhat = tl.where(mask, (tl.load(X + offs, mask=mask, other=0.0).to(tl.float32) + a - mean) * rstd, 0.0)
                du = _grad_u(DY, Seed, p, offs, mask, xhat, w, bias, SILU, DROPOUT)
                dz = tl.where(mask, rstd * (du * w - m1 - xhat * m2), 0.0)
                tl.store(DX + offs, dz.to(DX.dtype.element_ty), mask=mask)
                if HAS_ADD:
                    s_dx += dz
            if HAS_ADD:
                tl.store(DA + b * C + c, tl.sum(s_dx, axis=0)[None, :], mask=cmask)


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last)


def _empty_like(x):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _zeros(B: int, C: int, device: torch.device) -> torch.Tensor:
    """A (B, C) float32 zero shift, made afresh for each call. Not kept between calls: under CUDA graph trees
    (torch.compile's reduce-overhead mode) a tensor made during a warm-up run and kept past it is an
    allocation of the graph's memory pool that no output owns, which cudagraph trees refuse."""
    return torch.zeros(B, C, device=device, dtype=torch.float32)


def _forward(x, add, weight, bias, y, mean, rstd, seed, p, eps, silu):
    """Launch the forward kernel on x (channels-last) into y (x's shape); mean and rstd (B, groups) receive
    the statistics."""
    B, C, H, W = x.shape
    G = mean.shape[1]
    block, gpb, cg, cg_p2, warps, resident = _blocks(H * W, C, G, dropout=p > 0)
    if add is None and not resident and ZERO_SHIFT:
        # measured on an H100: the tiled kernel compiled with a shift streams 25-30% faster than the
        # one without (1.16 vs 1.53 ms on 2500x256x32x32), so it gets a zero shift (a 4-byte/channel memset)
        add = _zeros(B, C, x.device)
    _gn_act_fwd[(triton.cdiv(G, gpb), B)](
        x, add if add is not None else x, weight, bias, y, mean, rstd, seed if seed is not None else mean,
        p, H * W, C, G, eps, HAS_ADD=add is not None, SILU=silu, DROPOUT=p > 0, RESIDENT=resident,
        BLOCK=block, GPB=gpb, CG=cg, CG_P2=cg_p2, num_warps=warps)


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
    _forward(x, add, weight, bias, y, mean, rstd, seed, p, eps, silu)
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
    """(dx, d add, d weight and d bias per (sample, channel)); d add is empty without `add`. The caller
    sums the last two over samples, where torch.compile can fuse the sum with other work."""
    x, dy = _channels_last(x), _channels_last(dy)
    B, C, H, W = x.shape
    dx = _empty_like(x)
    dw, db = (torch.empty(B, C, device=x.device, dtype=torch.float32) for _ in range(2))
    da = torch.empty(B, C, device=x.device, dtype=torch.float32) if add is not None else dw.new_empty(0)
    block, gpb, cg, cg_p2, warps, resident = _blocks(H * W, C, num_groups, backward=True)
    _gn_act_bwd[(triton.cdiv(num_groups, gpb), B)](
        dy, x, add if add is not None else x, weight, bias, mean, rstd, seed if seed is not None else mean, p,
        dx, da if add is not None else dw, dw, db, H * W, C, num_groups,
        HAS_ADD=add is not None, SILU=silu, DROPOUT=p > 0, RESIDENT=resident,
        BLOCK=block, GPB=gpb, CG=cg, CG_P2=cg_p2, num_warps=warps)
    return dx, da.to(add.dtype) if add is not None else da, dw, db


@gn_act_backward.register_fake
def _(dy, x, add, weight, bias, mean, rstd, seed, num_groups, silu, p):
    da = add.new_empty(add.shape) if add is not None else x.new_empty(0, dtype=torch.float32)
    per_sample = x.new_empty(x.shape[:2], dtype=torch.float32)
    return _empty_like(x), da, per_sample, per_sample.clone()


def _setup_context(ctx, inputs, output):
    x, add, weight, bias, seed, num_groups, eps, silu, p = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, add, weight, bias, seed, mean, rstd)
    ctx.num_groups, ctx.silu, ctx.p = num_groups, silu, p


def _backward(ctx, dy, _dmean, _drstd):
    x, add, weight, bias, seed, mean, rstd = ctx.saved_tensors
    dx, da, dw, db = gn_act_backward(dy, x, add, weight, bias, mean, rstd, seed, ctx.num_groups, ctx.silu, ctx.p)
    return (dx, (da if add is not None else None), dw.sum(0).to(weight.dtype), db.sum(0).to(bias.dtype),
            None, None, None, None, None)


gn_act.register_autograd(_backward, setup_context=_setup_context)


def group_norm_act(x: torch.Tensor, num_groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   add: Optional[torch.Tensor] = None, silu: bool = True, dropout: float = 0.0) -> torch.Tensor:
    """dropout(act(GN(x + add[:, :, None, None]))) through the fused kernels; see supported()."""
    seed = None
    if dropout > 0:
        seed = torch.randint(-2 ** 63, 2 ** 63 - 1, (1,), device=x.device, dtype=torch.int64)
    return gn_act(x, add, weight, bias, seed, num_groups, eps, silu, float(dropout))[0]
