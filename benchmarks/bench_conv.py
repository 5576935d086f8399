"""Every convolution shape of a U-Net preset, timed alone at one batch size (bf16, channels-last,
cuDNN autotuning on): cuDNN's kernel, and the matrix-product forms that diffrepro/nets/conv.py uses
(1x1 kernels as one product, 3x3 kernels over few input channels as im2col + product).

    python benchmarks/bench_conv.py --preset ddpmpp-cifar --batch 2500
    python benchmarks/bench_conv.py --preset ddpmpp-cifar --batch 2500 --chunks 1,2,4   # also: the batch split in parts
    python benchmarks/bench_conv.py --preset ddpmpp-cifar --batch 2500 --cudnn-benchmark-limit 0   # time every cuDNN algorithm

Inputs are SiLU of Gaussian noise (what a group norm + SiLU hands a convolution), weights Gaussian,
no bias (the U-Net adds biases in fused pointwise kernels). Each row: input (C, H, W), weight shape,
calls per network evaluation, ms per call of each form, TFLOP/s of cuDNN's.
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
import torch.nn.functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import cuda_ms, write_result  # noqa: E402
from diffrepro.nets import build_network  # noqa: E402
from diffrepro.nets import conv as conv_mm  # noqa: E402


def convolution_shapes(preset: str, resolution: int, channels: int) -> collections.Counter:
    """(input (C, H, W), weight shape, padding) -> calls per network evaluation, recorded on the CPU
    where every U-Net convolution goes through diffrepro.nets.conv.conv2d."""
    shapes = collections.Counter()
    real = conv_mm.conv2d

    def record(x, weight, bias, padding):
        shapes[(tuple(x.shape[1:]), tuple(weight.shape), padding)] += 1
        return real(x, weight, bias, padding)

    net = build_network(preset, channels=channels, img_resolution=resolution).eval()
    conv_mm.conv2d = record
    try:
        with torch.no_grad():
            net(torch.randn(1, channels, resolution, resolution), torch.ones(1))
    finally:
        conv_mm.conv2d = real
    return shapes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="ddpmpp-cifar")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument("--chunks", default="1", help="comma-separated: also time 3x3 kernels on the batch split in this many parts")
    ap.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                    help="how many cuDNN algorithms autotuning times per shape (0: all; default: torch's)")
    ap.add_argument("--out", default="benchmarks/results/h100.json")
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    limit = ""
    if args.cudnn_benchmark_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
        limit = f"-cudnn-limit{args.cudnn_benchmark_limit}"
    chunks = [int(c) for c in args.chunks.split(",") if int(c) > 1]     # 1: the whole batch, always timed
    rows, totals = [], collections.Counter()
    for (xs, ws, pad), count in convolution_shapes(args.preset, args.resolution, args.channels).items():
        x = nnf.silu(torch.randn(args.batch, *xs, device="cuda", dtype=torch.bfloat16))
        x = x.contiguous(memory_format=torch.channels_last)
        w = (torch.randn(*ws, device="cuda", dtype=torch.bfloat16) * 0.02).contiguous(memory_format=torch.channels_last)
        flop = 2 * args.batch * xs[1] * xs[2] * ws[0] * ws[1] * ws[2] * ws[3]
        row = {"input": list(xs), "weight": list(ws), "calls_per_evaluation": count}
        with torch.no_grad():
            row["cudnn_ms"] = round(cuda_ms(lambda: nnf.conv2d(x, w, None, 1, pad), 10, 3), 4)
            if conv_mm.has_matrix_product_form(w):
                row["matrix_product_ms"] = round(cuda_ms(lambda: conv_mm.conv2d(x, w, None, pad), 10, 3), 4)
            elif ws[2] == 3:
                for parts in chunks:
                    xs_ = x.chunk(parts)
                    row[f"cudnn_in_{parts}_parts_ms"] = round(cuda_ms(lambda: [nnf.conv2d(t, w, None, 1, pad) for t in xs_], 10, 3), 4)
        row["cudnn_tflops"] = round(flop / row["cudnn_ms"] / 1e9, 1)
        totals["cudnn"] += count * row["cudnn_ms"]
        totals["library"] += count * row.get("matrix_product_ms", row["cudnn_ms"])
        rows.append(row)
        print(row, flush=True)
        del x, w
    write_result(args.out, f"conv-shapes-{args.preset}{limit}-b{args.batch}", {
        "batch": args.batch, "rows": rows, "ms_per_evaluation_all_cudnn": round(totals["cudnn"], 2),
        "ms_per_evaluation_as_the_library_runs_them": round(totals["library"], 2)})


if __name__ == "__main__":
    main()
