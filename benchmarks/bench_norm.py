"""Group norm + SiLU (+ dropout) on one DDPM++ activation (channels-last, bf16), the fused kernels
(diffrepro/fast/fused_norm.py) vs torch.compile's of the by-channel norm (diffrepro/fast/norm.py), with the
memory bandwidth each reaches (bytes a pass must move at the least / time). In sampling mode the table
also times one plain elementwise pass over the same tensor: the bandwidth a group norm could reach.

    python benchmarks/bench_norm.py --batch 2500            # sampling: forward only, eval
    python benchmarks/bench_norm.py --batch 512 --train     # training: + emb shift, dropout, backward
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import cuda_ms, write_result  # noqa: E402
from diffrepro.fast.norm import group_norm_act  # noqa: E402


def main(args):
    torch.manual_seed(0)
    B, C, R = args.batch, args.channels, args.resolution
    gn = torch.nn.GroupNorm(min(32, C // 4), C, eps=1e-6).cuda()
    x = torch.randn(B, C, R, R, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    add = torch.randn(B, C, device="cuda", dtype=torch.bfloat16) if args.train else None
    dy = torch.randn_like(x)
    p = args.dropout if args.train else 0.0
    tensor_gb = x.numel() * x.element_size() / 1e9
    results = {}
    for variant, fused in [("fused", True), ("compiled", False)]:
        torch.compiler.reset()
        fn = torch.compile(lambda x, add: group_norm_act(gn, x, fused, add=add, dropout=p))
        if args.train:
            xg = x.detach().requires_grad_()
            step = lambda: torch.autograd.grad(fn(xg, add), [xg, gn.weight], dy)   # noqa: E731
            passes = 5          # forward: read x, write y; backward: read x and dy, write dx
        else:
            step = lambda: fn(x, None)   # noqa: E731
            passes = 2
        with torch.no_grad() if not args.train else torch.enable_grad():
            ms = cuda_ms(step)
        results[variant] = {"ms": round(ms, 3), "tb_per_s_at_least": round(passes * tensor_gb / ms, 3)}
    results["speedup"] = round(results["compiled"]["ms"] / results["fused"]["ms"], 2)
    if not args.train:      # the ceiling: one generated elementwise pass (read x, write y) over the same tensor
        torch.compiler.reset()
        scale = torch.compile(lambda x: x * 1.5)
        ms = cuda_ms(lambda: scale(x))
        results["elementwise_pass"] = {"ms": round(ms, 3), "tb_per_s_at_least": round(2 * tensor_gb / ms, 3)}
    name = f"norm-{'train' if args.train else 'eval'}-b{B}-c{C}-r{R}"
    write_result(args.out, name, {"shape": [B, C, R, R], "dtype": "bfloat16", "dropout": p, **results})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.13)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    main(ap.parse_args())
