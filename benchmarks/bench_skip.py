"""A residual block's 1x1 skip product + residual sum (diffrepro/nets/skip_matmul.py) on DDPM++'s shapes at
the sampling batch size: the Triton kernel in each launch shape, what its autotuning picks, and what
torch.compile makes of the same sums (concatenation + cuBLAS product + pointwise sum). Bandwidth is the
bytes the fused form must move (read the parts and the residual, write the output) over the time.

    python benchmarks/bench_skip.py --batch 2500
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import cuda_ms, write_result  # noqa: E402
from diffrepro.nets import skip_matmul  # noqa: E402

# (name, the parts' channels, output channels, resolution): a decoder block at 32x32 and at 16x16, the
# first encoder block (128 -> 256), the last decoder block (256 + 128, concatenated: its groups straddle)
SHAPES = [("dec32", (256, 256), 256, 32), ("dec16", (256, 256), 256, 16), ("enc32", (128,), 256, 32),
          ("dec32-384", (384,), 256, 32)]


def main(args):
    torch.manual_seed(0)
    rows, summary = [], {}
    for name, channels, cout, res in SHAPES:
        cl = dict(device="cuda", dtype=torch.bfloat16)
        parts = [torch.randn(args.batch, c, res, res, **cl).to(memory_format=torch.channels_last) for c in channels]
        residual = torch.randn(args.batch, cout, res, res, **cl).to(memory_format=torch.channels_last)
        weight = torch.randn(cout, sum(channels), 1, 1, device="cuda") / math.sqrt(sum(channels))
        bias = torch.randn(cout, device="cuda")
        gb = (sum(p.numel() for p in parts) + 2 * residual.numel()) * 2 / 1e9
        scale = math.sqrt(0.5)
        ref = skip_matmul.plain([p.float() for p in parts], weight, bias, residual.float(), scale)

        def report(variant, fn):
            ms = cuda_ms(fn, repeats=args.repeats, warmup=2)
            err = ((fn().float() - ref).abs().max() / ref.abs().max()).item()
            rows.append([name, variant, round(ms, 4), round(gb / ms, 3), round(err, 5)])
            print(rows[-1], flush=True)
            return ms

        def plain(*p):                                      # as in the network: under bf16 autocast
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return skip_matmul.plain(list(p[:-1]), weight, bias, p[-1], scale)
        compiled = torch.compile(plain)
        summary[f"{name} compiled"] = report("torch.compile", lambda: compiled(*parts, residual))
        M, cin = args.batch * res * res, sum(channels)
        wt = weight.reshape(cout, cin).t().to(torch.bfloat16).contiguous()
        out = torch.empty_like(residual)
        a2, k2 = (parts[1], channels[1]) if len(parts) > 1 else (parts[0], 0)
        for m, n, warps, stages in args.configs:
            for prefetch in (False, True):
                def launch(m=m, n=n, warps=warps, stages=stages, prefetch=prefetch):
                    skip_matmul._skip_residual_kernel[(triton.cdiv(M, m) * (cout // n),)](
                        parts[0], a2, wt, bias, residual, out, M, channels[0], k2, scale, cout, k2 > 0, "tf32",
                        BLOCK_M=m, BLOCK_N=n, BLOCK_K=skip_matmul.BLOCK_K, PREFETCH=prefetch,
                        num_warps=warps, num_stages=stages)
                    return out
                try:
                    report(f"{m}x{n} w{warps} s{stages}{' prefetch' if prefetch else ''}", launch)
                except Exception as e:                      # e.g. more shared memory than a block may have
                    rows.append([name, f"{m}x{n} w{warps} s{stages}", None, None, type(e).__name__])
        tuned = lambda: skip_matmul.skip_residual(parts, weight, bias, residual, scale)   # noqa: E731
        summary[f"{name} autotuned"] = report("autotuned", tuned)
        summary[f"{name} autotuned config"] = str(skip_matmul._skip_residual_tuned.best_config)
        summary[f"{name} GB moved"] = round(gb, 3)
    write_result(args.out, f"skip-product-b{args.batch}", {
        "batch": args.batch, "columns": ["shape", "variant", "ms", "TB/s (the fused form's bytes / time)", "max rel err vs fp32"],
        "rows": rows, "summary": summary})


if __name__ == "__main__":
    import triton
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--configs", type=lambda s: [tuple(map(int, c.split(","))) for c in s.split(";")],
                    default=skip_matmul.CONFIGS + [(128, 256, 8, 3), (128, 256, 8, 4), (64, 256, 8, 4), (128, 128, 8, 3)],
                    help="launch shapes to time, 'rows,columns,warps,stages;...'")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    main(ap.parse_args())
