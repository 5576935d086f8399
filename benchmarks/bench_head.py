"""The two ends of DDPM++'s decoder at the sampling batch size, each against what the network ran before,
both under torch.compile and bf16 autocast as when sampling:

- head: the output layer conv3x3(silu(GN(x))), 256 -> 3 channels at 32x32: the fused group norm, then
  cuDNN's convolution, against diffrepro/nets/out_head.py (moments, scale and shift, product, tap sum);
- straddle: the last decoder block's group norm over 256 + 128 channels in groups of 12, which straddle the
  parts: concatenation + fused group norm, against diffrepro/nets/norm_split.py (moments of each part,
  then one pointwise pass into the output).

    python benchmarks/bench_head.py --batch 2500
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import cuda_ms, write_result  # noqa: E402
from diffrepro.nets import norm_split, out_head  # noqa: E402
from diffrepro.nets.norm import GroupNorm  # noqa: E402


def cl(x):
    return x.contiguous(memory_format=torch.channels_last)


def launch_shapes(args):
    """ms of each kernel in other launch shapes: the product (rows, warps, stages), the moments and apply
    kernels (rows, channels, warps), on a 2500 x 256 x 32 x 32 bf16 input."""
    import triton
    x = cl(torch.randn(args.batch, 256, 32, 32, device="cuda")).to(torch.bfloat16)
    B, C, H, W = x.shape
    M = B * H * W
    scale, shift = torch.rand(2, B, C, device="cuda")
    wz = torch.randn(C, 32, device="cuda", dtype=torch.bfloat16)
    z = torch.empty(M, 32, device="cuda")
    y, mom = torch.empty_like(x), torch.empty(B, 1, C, 2, device="cuda")
    out = {"a plain copy of x (read + write)": round(cuda_ms(lambda: y.copy_(x), repeats=args.repeats), 4),
           "a plain sum over x (read)": round(cuda_ms(lambda: x.sum(), repeats=args.repeats), 4)}
    for rows, warps, stages in [(128, 4, 3), (128, 4, 2), (128, 8, 3), (64, 4, 3), (256, 8, 3), (256, 4, 3), (128, 4, 4)]:
        out[f"product {rows} rows, {warps} warps, {stages} stages"] = round(cuda_ms(
            lambda: out_head._act_product_kernel[(M // rows,)](x, scale, shift, wz, z, H * W, C, 32, BLOCK_M=rows,
                                                               BLOCK_K=64, PRECISION="tf32", num_warps=warps,
                                                               num_stages=stages), repeats=args.repeats), 4)
    for rows, channels, warps in [(128, 64, 8), (64, 64, 4), (256, 32, 8), (128, 32, 4), (256, 64, 8), (64, 128, 8),
                                  (32, 256, 8)]:
        out[f"moments {rows} rows, {channels} channels, {warps} warps"] = round(cuda_ms(
            lambda: norm_split._moments_kernel[(triton.cdiv(C, channels), B)](
                x, mom, H * W, C, ROWS=rows, CHANNELS=channels, num_warps=warps), repeats=args.repeats), 4)
        out[f"apply {rows} rows, {channels} channels, {warps} warps"] = round(cuda_ms(
            lambda: norm_split._apply_kernel[(triton.cdiv(H * W, rows), triton.cdiv(C, channels), B)](
                x, scale, shift, y, H * W, C, C, 0, SILU=True, ROWS=rows, CHANNELS=channels, num_warps=warps),
            repeats=args.repeats), 4)
    for k, v in out.items():
        print(k, v, flush=True)
    return out


def main(args):
    torch.manual_seed(0)
    dev = dict(device="cuda")
    summary = {}

    def report(name, fn, ref):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            compiled = torch.compile(fn)
            ms = cuda_ms(compiled, repeats=args.repeats, warmup=3)
            err = ((compiled().float() - ref).abs().max() / ref.abs().max()).item()
        summary[name] = {"ms": round(ms, 4), "max_rel_err_vs_fp32": round(err, 5)}
        print(name, summary[name], flush=True)

    # the output layer
    x = cl(torch.randn(args.batch, 256, 32, 32, **dev) * 2 + 0.5).to(torch.bfloat16)
    norm = GroupNorm(32, 256, eps=1e-6).to(**dev)
    conv = torch.nn.Conv2d(256, 3, 3, padding=1).to(**dev)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3), norm.bias.normal_(0, 0.3), conv.bias.normal_()
        ref = conv(norm.act(x.float()))
    report("head: fused norm + cuDNN conv", lambda: conv(norm.act(x)), ref)
    report("head: out_head", lambda: out_head.head(x, norm, conv), ref)

    # the last decoder block's norm, groups straddling its parts
    parts = [cl(torch.randn(args.batch, c, 32, 32, **dev) + 1).to(torch.bfloat16) for c in (256, 128)]
    norm = GroupNorm(32, 384, eps=1e-6).to(**dev)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3), norm.bias.normal_(0, 0.3)
        ref = norm.act(torch.cat([p.float() for p in parts], 1))
    report("straddle: concatenation + fused norm", lambda: norm.act(torch.cat(parts, 1)), ref)
    report("straddle: norm_split", lambda: norm_split.group_norm_act(parts, 32, norm.weight, norm.bias, 1e-6), ref)
    report("moments of a 256-channel part", lambda: norm_split.channel_moments(parts[0]),
           norm_split.channel_moments(parts[0].float()))
    report("split norm's application, 256 + 128 channels",
           lambda: norm_split.apply(parts, torch.ones(args.batch, 384, device="cuda"),
                                    torch.zeros(args.batch, 384, device="cuda"), True),
           torch.nn.functional.silu(torch.cat([p.float() for p in parts], 1)))
    summary["launch shapes"] = launch_shapes(args)
    write_result(args.out, f"head-straddle-b{args.batch}", {"batch": args.batch, "summary": summary})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    main(ap.parse_args())
