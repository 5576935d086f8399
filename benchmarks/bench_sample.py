"""Sampling throughput (EDM Heun, 18 steps = 35 NFE) and closeness of the fast path to fp32.

    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 50000 --batch 2500 --mode fast
    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 2500 --batch 2500 --mode fp32
    python benchmarks/bench_sample.py speed --preset small --channels 1 --num 5000 --batch 1000 --mode fast --no-compile
    python benchmarks/bench_sample.py profile --preset ddpmpp-cifar --batch 2500 --mode fast [--kernel-table k.csv] [--trace t.json.gz]
    python benchmarks/bench_sample.py compare --preset ddpmpp-cifar --num 5000 --save cmp.npz [--model results/runs/<run>/model.pt]
    python benchmarks/bench_sample.py fid --load cmp.npz      # FID fast vs fp32 against the seed-to-seed FID

Modes: `fast` = what the sample stage runs on a GPU (diffrepro.inference.for_sampling: bf16 autocast
around the raw network, the speed paths of diffrepro/fast, torch.compile unless --no-compile); `plain` =
the plain network under bf16 autocast and torch.compile; `fp32` = the plain network in fp32, TF32 off.
The sampler's own arithmetic stays in float64 as in EDM. Without --model the network has random weights
with an active output layer (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, peak_memory_gib, profile_kernels, random_denoiser, write_result  # noqa: E402
from diffrepro.fast import AutocastNet, compile_model  # noqa: E402
from diffrepro.inference import for_sampling  # noqa: E402
from diffrepro.models import load_model  # noqa: E402
from diffrepro.samplers import generate_batches, to_uint8  # noqa: E402


def denoiser(args, mode):
    if args.model:
        D, rec = load_model(args.model, "cuda")
        shape = tuple(rec["data_shape"])
    else:
        D, shape = random_denoiser(args.preset, args.channels).cuda(), (args.channels, 32, 32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode != "fp32"
    if mode == "fast":
        D, _ = for_sampling(D, "cuda", compile=not args.no_compile, compile_mode=args.compile_mode)
    elif mode == "plain":
        D.net = compile_model(AutocastNet(D.net), args.compile_mode)
    if args.cudnn_benchmark_limit is not None:
        torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    return D, shape


def draw(D, shape, num, batch, steps, first_seed=0):
    """Samples of seeds first_seed .. first_seed + num - 1, in batches (the last one filled up with the seeds after)."""
    seed_batches = [range(s, s + batch) for s in range(first_seed, first_seed + num, batch)]
    with torch.no_grad():
        return torch.cat([r.samples.float() for r in generate_batches(
            D, shape, seed_batches, device="cuda", sampler="heun", num_steps=steps)])[:num]


def _variant(args):
    return (f"-{args.compile_mode}" if args.compile_mode else "") + ("-no-compile" if args.no_compile else "")


def speed(args):
    D, shape = denoiser(args, args.mode)
    with Timer() as warm:     # compilation and autotuning happen on the first batch
        draw(D, shape, args.batch, args.batch, args.steps)
    with Timer() as t:
        x = draw(D, shape, args.num, args.batch, args.steps)
    channels = f"-c{args.channels}" if args.channels != 3 else ""
    write_result(args.out, f"sample-{args.preset}{channels}-{args.mode}{_variant(args)}-n{args.num}-b{args.batch}", {
        "num_samples": args.num, "batch": args.batch, "nfe": 2 * args.steps - 1, "first_batch_s": round(warm.seconds, 1),
        "seconds": round(t.seconds, 1), "img_per_s": round(args.num / t.seconds, 1),
        "seconds_incl_first_batch": round(t.seconds + warm.seconds, 1), "peak_memory_gib": peak_memory_gib(),
        "finite": bool(torch.isfinite(x).all())})


def profile(args):
    D, shape = denoiser(args, args.mode)
    draw(D, shape, args.batch, args.batch, args.steps)      # compile and warm up
    summary = profile_kernels(lambda: draw(D, shape, args.batch, args.batch, args.steps), 1, "batch",
                              table=args.kernel_table, trace=args.trace)
    nfe = 2 * args.steps - 1
    write_result(args.out, f"profile-sample-{args.preset}-{args.mode}{_variant(args)}-b{args.batch}", {
        "batch": args.batch, "nfe": nfe, "img_per_s": round(args.batch / summary["batch_ms"] * 1000, 1),
        "gpu_busy_ms_per_network_call": round(summary["gpu_busy_ms_per_batch"] / nfe, 2), **summary})


def compare(args):
    ref_D, shape = denoiser(args, "fp32")
    ref = draw(ref_D, shape, args.num, args.batch, args.steps)
    fast_D, _ = denoiser(args, "fast")
    fast = draw(fast_D, shape, args.num, args.batch, args.steps)
    diff = (fast - ref).abs()
    u8 = np.abs(to_uint8(fast).astype(int) - to_uint8(ref).astype(int))
    write_result(args.out, f"sample-compare-{Path(args.model).parent.name if args.model else args.preset}{_variant(args)}", {
        "num_samples": args.num, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
        "uint8_pixels_differing": float((u8 > 0).mean()), "uint8_max_diff": int(u8.max()),
        "rms_signal": float(ref.pow(2).mean().sqrt())})
    if args.save:
        np.savez(args.save, fast=to_uint8(fast), fp32=to_uint8(ref))


def fid(args):
    """FID between the fast and the fp32 samples of the same seeds, next to the FID between two halves
    of the fp32 samples (different seeds): how far the fast path moves the distribution, against the
    sampling noise of a set of this size. Reads the arrays that `compare --save` wrote."""
    from diffrepro.metrics.fid import feature_statistics, features_from_array, frechet_distance
    saved = np.load(args.load)
    fast, ref = saved["fast"], saved["fp32"]
    half = len(ref) // 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats = {name: feature_statistics(features_from_array(x, device=device, batch_size=100))
             for name, x in [("fast", fast[:half]), ("fp32", ref[:half]), ("fp32_other_seeds", ref[half:])]}
    fd = lambda a, b: frechet_distance(*stats[a], *stats[b])   # noqa: E731
    write_result(args.out, f"sample-compare-fid-{Path(args.load).stem}", {
        "num_per_set": half, "fid_fast_vs_fp32_same_seeds": round(fd("fast", "fp32"), 4),
        "fid_fp32_vs_fp32_other_seeds": round(fd("fp32", "fp32_other_seeds"), 4),
        "fid_fast_vs_fp32_other_seeds": round(fd("fast", "fp32_other_seeds"), 4)})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "compare", "profile", "fid"])
    ap.add_argument("--preset", default="ddpmpp-cifar")
    ap.add_argument("--model", default=None, help="a trained model.pt (default: random weights)")
    ap.add_argument("--channels", type=int, default=3, help="image channels (1: Fashion-MNIST)")
    ap.add_argument("--num", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=2500)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--mode", choices=["fast", "plain", "fp32"], default="fast")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (fast, plain), e.g. reduce-overhead")
    ap.add_argument("--no-compile", action="store_true", help="fast path without torch.compile (the sample stage's "
                                                               "setting when evaluation.sample_compile is false)")
    ap.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                    help="how many cuDNN algorithms autotuning times per shape (0: all; default: torch's)")
    ap.add_argument("--kernel-table", default=None,
                    help="profile: also write every kernel's time and launches per batch to this CSV")
    ap.add_argument("--trace", default=None, help="profile: also write the profiler's Chrome trace here (.json.gz)")
    ap.add_argument("--save", default=None, help="compare: write both sample sets to this .npz")
    ap.add_argument("--load", default=None, help="fid: the .npz that compare --save wrote")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    {"speed": speed, "compare": compare, "profile": profile, "fid": fid}[ap.parse_args().what](ap.parse_args())
