"""A residual block's 1x1 skip convolution and its residual sum as one matrix product, for inference:

    out = (residual + conv1x1(torch.cat(parts, 1))) * scale

In the U-Net's decoder the block input is the concatenation of the previous block's output and an
encoder output. Written out, the concatenation is a copy of both, the skip convolution reads the copy
and writes its product, and a pointwise kernel reads the product and the residual and writes the sum.
Here one Triton program per (pixels x output channels) tile walks the inner dimension through each part
in turn (a product over a concatenation is the sum of the parts' products with the matching columns of
the weight), and adds the bias and the residual and scales in its epilogue: the parts and the residual
are read once, the output written once, and neither the concatenation nor the product is ever stored.
With fused_norm.group_norm_act_parts, which normalizes the parts without concatenating them either, a
decoder block never writes its input's concatenation.

A block whose skip is its input sums its residual in residual_sum, which also writes the output's
per-channel moments over blocks of MOMENT_ROWS pixels: the group norms that read the output take them
instead of walking it once more for their statistics. (The skip product could give the same moments in
its epilogue, but on an H100 that reduction cost more than the passes it saved: benchmarks/RESULTS.md.)

Forward only (no gradient is wanted): used by unet.UNetBlock when sampling on a GPU with channels-last
tensors; training and everything else take the plain path, which the tests compare this one against.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as nnf

from . import fused_norm

try:
    import triton
    import triton.language as tl
except ImportError:                                     # CPU-only installs: the plain path is used
    triton = None

BLOCK_K = 64            # inner dimension per step: each part's channel count is a multiple of this
MOMENT_ROWS = 64        # the output's moments are per this many pixels (a sample's pixels are a multiple)
MAX_PARTS = 2


def plain(parts: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
          scale: float) -> torch.Tensor:
    """The same sums, one op at a time (the definition)."""
    from .conv import conv2d
    x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return (residual + conv2d(x, weight, bias, 0)) * scale


def _channels_last(x: torch.Tensor) -> bool:
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _kernels_take(tensors: list[torch.Tensor], *params: torch.Tensor) -> bool:
    """What both kernels here need: Triton (not switched off), no gradient wanted, CUDA tensors (or
    Triton's interpreter) of one float dtype, stored channels-last."""
    x = tensors[0]
    return (triton is not None and os.environ.get("DIFFREPRO_FUSED_SKIP", "1") != "0"
            and not fused_norm.wants_grad(*tensors, *params)
            and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
            and x.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and all(_channels_last(t) and t.dtype == x.dtype for t in tensors))


def supported(parts: list[torch.Tensor], weight: torch.Tensor) -> bool:
    """Whether skip_residual takes the kernel for these parts and this 1x1 weight (else `plain`)."""
    if not (1 <= len(parts) <= MAX_PARTS and _kernels_take(parts, weight)):
        return False
    x = parts[0]
    cout, cin, k, _ = weight.shape
    return (k == 1 and cout % 64 == 0 and cin == sum(p.shape[1] for p in parts)
            and all(p.shape[1] % BLOCK_K == 0 and p.shape[0] == x.shape[0] and p.shape[2:] == x.shape[2:]
                    for p in parts))


if triton is not None:
    # launch shapes (rows, columns, warps, stages) that benchmarks/bench_skip.py times; autotuned per shape
    CONFIGS = [(128, 128, 4, 3), (128, 128, 4, 2), (64, 128, 4, 4), (64, 128, 4, 3), (256, 128, 8, 3),
               (128, 64, 4, 4)]

    def _configs():
        return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "PREFETCH": f}, num_warps=w, num_stages=s)
                for m, n, w, s in CONFIGS for f in (False, True)]

    def _prune(configs, named_args, **kwargs):
        n = named_args["N"]
        return [c for c in configs if n % c.kwargs["BLOCK_N"] == 0]        # one of 64 columns always is

    @triton.jit
    def _skip_residual_kernel(A1, A2, Wt, Bias, R, Out, M, K1, K2, scale, N: tl.constexpr,
                              HAS_A2: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PREFETCH: tl.constexpr):
        # consecutive programs share their rows (pixels), so a row block is read from memory once
        pid = tl.program_id(0)
        pid_m, pid_n = pid // (N // BLOCK_N), pid % (N // BLOCK_N)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        rows = rm[:, None] < M
        offs = rm[:, None] * N + rn[None, :]
        if PREFETCH:                                # the residual's load is issued before the product
            r = tl.load(R + offs, mask=rows, other=0.0)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K1, BLOCK_K):
            a = tl.load(A1 + rm[:, None] * K1 + (k + rk)[None, :], mask=rows, other=0.0)
            w = tl.load(Wt + (k + rk)[:, None] * N + rn[None, :])
            acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if HAS_A2:                                  # the second part: the weight's next K2 rows
            for k in range(0, K2, BLOCK_K):
                a = tl.load(A2 + rm[:, None] * K2 + (k + rk)[None, :], mask=rows, other=0.0)
                w = tl.load(Wt + (K1 + k + rk)[:, None] * N + rn[None, :])
                acc = tl.dot(a, w, acc, input_precision=PRECISION)
        if not PREFETCH:
            r = tl.load(R + offs, mask=rows, other=0.0)
        acc += tl.load(Bias + rn)[None, :].to(tl.float32) + r.to(tl.float32)
        tl.store(Out + offs, (acc * scale).to(Out.dtype.element_ty), mask=rows)

    @triton.jit
    def _tile_moments(Mom, v, pid_m, rn, N: tl.constexpr, BLOCK_M: tl.constexpr):
        """Per channel, the mean of the (BLOCK_M, BLOCK_N) tile v's rows and the sum of their squared
        deviations from it, stored at Mom[(pid_m, channel)]: a sample's pixels are a whole number of
        BLOCK_M-row tiles, so these are (sample, tile) moments for the next group norm."""
        mean = tl.sum(v, axis=0) / BLOCK_M
        d = v - mean[None, :]
        m2 = tl.sum(d * d, axis=0)
        at = (pid_m.to(tl.int64) * N + rn) * 2
        tl.store(Mom + at, mean)
        tl.store(Mom + at + 1, m2)

    @triton.jit
    def _residual_kernel(Hc, X, Bias, Out, Mom, M, scale, N: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr):
        """out = (h + bias + x) * scale, and its tile moments."""
        pid_m, pid_n = tl.program_id(0), tl.program_id(1)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rows = rm[:, None] < M
        offs = rm[:, None] * N + rn[None, :]
        u = tl.load(Hc + offs, mask=rows, other=0.0).to(tl.float32) + tl.load(Bias + rn)[None, :].to(tl.float32)
        v = ((u + tl.load(X + offs, mask=rows, other=0.0).to(tl.float32)) * scale).to(Out.dtype.element_ty)
        tl.store(Out + offs, v, mask=rows)
        _tile_moments(Mom, v.to(tl.float32), pid_m, rn, N, BLOCK_M)

    _skip_residual_tuned = triton.autotune(configs=_configs(), key=["M", "K1", "K2", "N"],
                                           prune_configs_by={"early_config_prune": _prune})(_skip_residual_kernel)


def _moments_buffer(x: torch.Tensor, channels: int) -> torch.Tensor:
    B, _, H, W = x.shape
    return torch.empty(B, H * W // MOMENT_ROWS, channels, 2, device=x.device, dtype=torch.float32)


def moments_supported(x: torch.Tensor) -> bool:
    """Whether residual_sum can give the moments of an output of x's pixel count."""
    return x.shape[2] * x.shape[3] % MOMENT_ROWS == 0


@torch.library.custom_op("diffrepro::skip_residual", mutates_args=())
def _skip_residual_op(parts: list[torch.Tensor], wt: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """wt: the 1x1 weight as a (C_in, C_out) matrix in the parts' dtype."""
    parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
    wt = wt.contiguous()
    x = parts[0]
    B, _, H, W = x.shape
    cout = wt.shape[1]
    residual = residual.to(x.dtype).contiguous(memory_format=torch.channels_last)
    out = torch.empty(B, cout, H, W, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    M, K1 = B * H * W, parts[0].shape[1]
    a2, K2 = (parts[1], parts[1].shape[1]) if len(parts) > 1 else (x, 0)
    args = (x, a2, wt, bias.float(), residual, out, M, K1, K2, float(scale), cout, K2 > 0,
            "ieee" if x.dtype == torch.float32 else "tf32")           # float32 stays float32
    if x.is_cuda:
        _skip_residual_tuned[lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * (cout // meta["BLOCK_N"]),)](
            *args, BLOCK_K=BLOCK_K)
    else:                                                                       # Triton's interpreter (tests)
        _skip_residual_kernel[(triton.cdiv(M, 64) * (cout // 64),)](*args, BLOCK_M=64, BLOCK_N=64, BLOCK_K=BLOCK_K,
                                                                       PREFETCH=False)
    return out


@_skip_residual_op.register_fake
def _(parts, wt, bias, residual, scale):
    x = parts[0]
    return torch.empty(x.shape[0], wt.shape[1], *x.shape[2:], dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


def skip_residual(parts: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """(residual + conv1x1(torch.cat(parts, 1), weight, bias)) * scale: one fused kernel where
    supported(), else `plain`."""
    if supported(parts, weight):
        # the weight's matrix is made outside the op, where torch.compile sees it
        wt = weight.reshape(weight.shape[0], -1).t().to(parts[0].dtype).contiguous()
        return _skip_residual_op(list(parts), wt, bias, residual, scale)
    return plain(parts, weight, bias, residual, scale)


def residual_supported(h: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether residual_sum takes the kernel for these tensors."""
    return _kernels_take([h, x]) and h.shape == x.shape and x.shape[1] % 64 == 0 and moments_supported(x)


@torch.library.custom_op("diffrepro::residual_sum", mutates_args=())
def residual_sum(h: torch.Tensor, x: torch.Tensor, bias: torch.Tensor, scale: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """((h + bias) + x) * scale, for a block whose skip is its input, and the output's moments: per
    channel, the mean and the sum of squared deviations from it over each MOMENT_ROWS pixels of a sample,
    (B, H*W / MOMENT_ROWS, C, 2), which the next group norm takes instead of reading the output for its
    statistics; see residual_supported()."""
    h, x = (t.contiguous(memory_format=torch.channels_last) for t in (h, x))
    B, C, H, W = x.shape
    out = torch.empty_like(x, memory_format=torch.channels_last)
    mom = _moments_buffer(x, C)
    block_n = 128 if C % 128 == 0 else 64
    _residual_kernel[(B * H * W // MOMENT_ROWS, C // block_n)](h, x, bias.float(), out, mom, B * H * W, float(scale),
                                                              C, BLOCK_M=MOMENT_ROWS, BLOCK_N=block_n, num_warps=4)
    return out, mom


@residual_sum.register_fake
def _(h, x, bias, scale):
    return torch.empty_like(x, memory_format=torch.channels_last), _moments_buffer(x, x.shape[1])
