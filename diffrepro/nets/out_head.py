"""The U-Net's output layer for inference, conv3x3(silu(GN(x))) to a few channels (the image's), as a
matrix product and a gather:

    z[p, tap, o] = sum_c silu(x[p, c] * scale[c] + shift[c]) * w[o, c, tap]       (one pass over x)
    out[p, o]    = bias[o] + sum_tap z[p + offset(tap), tap, o]                   (neighbours inside the image)

Written out, the group norm writes its whole output and cuDNN reads it back for a convolution whose 3
output channels fill a tile of 32. Here the norm's scale and shift come from its moments (norm_split.py),
the first kernel reads x once and writes 9 x C_out floats per pixel, and the second sums each output
pixel's nine taps: the zero padding of the convolution's input is the taps that fall outside the image.
The same sums as F.conv2d in another order (the tests compare against float64).

Forward only, CUDA (or Triton's interpreter) tensors stored channels-last; DIFFREPRO_SPLIT_NORM=0 turns it
off (see norm_split.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as nnf

from . import fused_norm, norm_split

try:
    import triton
    import triton.language as tl
except ImportError:                                     # CPU-only installs: the plain path is used
    triton = None

# launch shape of the product: pixels per program (the largest power of two <= MAX_ROWS dividing H*W),
# warps, pipeline stages (benchmarks/bench_head.py times the alternatives)
MAX_ROWS = 128
WARPS = 4
STAGES = 3


def _rows(hw: int) -> int:
    rows = MAX_ROWS
    while rows >= 16 and hw % rows:
        rows //= 2
    return rows


def _columns(cout: int) -> int:
    """z's columns: 9 taps x C_out, padded to a power of two >= 16 (tl.dot's narrowest)."""
    return max(16, 1 << (9 * cout - 1).bit_length())


def supported(x: torch.Tensor, num_groups: int, weight: torch.Tensor) -> bool:
    """Whether head() takes x and this convolution weight (else: the norm, then the convolution)."""
    cout, cin, kh, kw = weight.shape
    return (norm_split.supported([x], num_groups) and not fused_norm.wants_grad(weight)
            and (kh, kw) == (3, 3) and cin == x.shape[1] and cin % 32 == 0 and 9 * cout <= 64
            and _rows(x.shape[2] * x.shape[3]) >= 16)


if triton is not None:
    @triton.jit
    def _act_product_kernel(X, Scale, Shift, Wz, Z, HW, C: tl.constexpr, NZ: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
        """z = silu(x * scale + shift) @ wz for BLOCK_M pixels of one sample (BLOCK_M divides HW)."""
        pid = tl.program_id(0)
        b = (pid * BLOCK_M) // HW
        rm = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = tl.arange(0, NZ)
        acc = tl.zeros((BLOCK_M, NZ), dtype=tl.float32)
        for k in range(0, C, BLOCK_K):
            c = k + tl.arange(0, BLOCK_K)
            u = tl.load(X + rm[:, None] * C + c[None, :]).to(tl.float32) * tl.load(Scale + b * C + c)[None, :] \
                + tl.load(Shift + b * C + c)[None, :]
            a = (u * tl.sigmoid(u)).to(X.dtype.element_ty)          # the convolution's input, as the norm stores it
            acc = tl.dot(a, tl.load(Wz + c[:, None] * NZ + rn[None, :]), acc, input_precision=PRECISION)
        tl.store(Z + rm[:, None] * NZ + rn[None, :], acc)

    @triton.jit
    def _tap_sum_kernel(Z, Bias, Out, M, H, W, COUT: tl.constexpr, CO_P2: tl.constexpr, NZ: tl.constexpr,
                        BLOCK: tl.constexpr):
        """out[p, o] = bias[o] + sum over the 3x3 taps (ky, kx) of z[p + (ky-1, kx-1), (ky, kx), o]."""
        p = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
        o = tl.arange(0, CO_P2)
        valid = p < M
        col = p % W
        row = (p // W) % H
        acc = tl.zeros((BLOCK, CO_P2), tl.float32) + tl.load(Bias + o, mask=o < COUT, other=0.0)[None, :]
        for ky in tl.static_range(3):
            for kx in tl.static_range(3):
                r, s = row + (ky - 1), col + (kx - 1)
                inside = valid & (r >= 0) & (r < H) & (s >= 0) & (s < W)
                q = p + ((ky - 1) * W + (kx - 1))
                acc += tl.load(Z + q[:, None] * NZ + ((ky * 3 + kx) * COUT + o)[None, :],
                               mask=inside[:, None] & (o < COUT)[None, :], other=0.0)
        tl.store(Out + p[:, None] * COUT + o[None, :], acc.to(Out.dtype.element_ty),
                 mask=valid[:, None] & (o < COUT)[None, :])


def weight_matrix(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (C_out, C, 3, 3) weight as the product's (C, columns) matrix: column (ky * 3 + kx) * C_out + o, zero
    columns after the 9 x C_out. Made outside the op, where torch.compile sees it and fuses it with the weight's cast."""
    cout, cin = weight.shape[:2]
    return nnf.pad(weight.permute(1, 2, 3, 0).reshape(cin, 9 * cout), (0, _columns(cout) - 9 * cout)).to(dtype)


@torch.library.custom_op("diffrepro::act_conv3x3", mutates_args=())
def act_conv3x3(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, wz: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
    """F.conv2d(silu(x * scale + shift), weight, bias, padding=1), scale and shift per (sample, channel), the
    weight given as weight_matrix(weight, x.dtype)."""
    x = x.contiguous(memory_format=torch.channels_last)
    wz = wz.contiguous()
    B, C, H, W = x.shape
    cout = bias.shape[0]
    nz, rows = wz.shape[1], _rows(H * W)
    M = B * H * W
    z = torch.empty(M, nz, device=x.device, dtype=torch.float32)
    _act_product_kernel[(M // rows,)](x, scale.float().contiguous(), shift.float().contiguous(), wz, z, H * W, C,
                                      nz, BLOCK_M=rows, BLOCK_K=64 if C % 64 == 0 else 32,
                                      PRECISION="ieee" if x.dtype == torch.float32 else "tf32", num_warps=WARPS,
                                      num_stages=STAGES)
    out = torch.empty(B, cout, H, W, device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    block = 256
    _tap_sum_kernel[(triton.cdiv(M, block),)](z, bias.float(), out, M, H, W, cout, max(2, 1 << (cout - 1).bit_length()),
                                              nz, BLOCK=block, num_warps=4)
    return out


@act_conv3x3.register_fake
def _(x, scale, shift, wz, bias):
    return torch.empty(x.shape[0], bias.shape[0], *x.shape[2:], device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last)


def head(x: torch.Tensor, norm, conv, moments: Optional[torch.Tensor] = None) -> torch.Tensor:
    """conv(act(norm(x))) for a norm.GroupNorm and a 3x3 convolution, without writing the norm's output;
    moments, where x came with them, stand in for the pass over x for its statistics; see supported()."""
    B, C, H, W = x.shape
    scale, shift = norm_split.scale_shift([norm_split.moments_or_pass(x, moments)], H * W, norm.num_groups,
                                          norm.weight, norm.bias, norm.eps)
    return act_conv3x3(x, scale, shift, weight_matrix(conv.weight, x.dtype), conv.bias)
