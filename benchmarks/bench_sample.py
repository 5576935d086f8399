"""Sampling throughput (EDM Heun, 18 steps = 35 NFE) and closeness of the fast path to fp32.

    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 50000 --batch 2500 --mode fast
    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 2500 --batch 2500 --mode fp32
    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 10000 --batch 1250 --streams 2
    python benchmarks/bench_sample.py speed --preset ddpmpp-cifar --num 10000 --precision fp16 [--cudnn-heuristics]
    python benchmarks/bench_sample.py profile --preset ddpmpp-cifar --batch 2500 --mode fast [--kernel-table k.csv] [--trace t.json.gz]
    python benchmarks/bench_sample.py compare --preset ddpmpp-cifar --num 5000 --save cmp.npz [--model results/runs/<run>/model.pt]
    python benchmarks/bench_sample.py fid --load cmp.npz      # FID fast vs fp32 against the seed-to-seed FID

`fast` = bf16 autocast + channels-last + torch.compile around the network (diffrepro.inference.make_fast);
the sampler's own arithmetic stays in float64 as in EDM. `--streams K` runs K samplers side by side, each
in its own thread on its own CUDA stream with its own seeds, to see whether the GPU overlaps one
sampler's memory-bound kernels with another's convolutions. Without --model the network has random weights
with an active output layer (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, conv_parts_chosen, fast_variant, peak_memory_gib, profile_kernels, set_tuning, write_result  # noqa: E402
from diffrepro.inference import make_fast  # noqa: E402
from diffrepro.models import load_model  # noqa: E402
from diffrepro.nets import build_network  # noqa: E402
from diffrepro.precond import EDMPrecond  # noqa: E402
from diffrepro.samplers import generate_batches, to_uint8  # noqa: E402


def denoiser(args, mode):
    if args.model:
        D, rec = load_model(args.model, "cuda")
        shape = tuple(rec["data_shape"])
    else:
        torch.manual_seed(0)
        net = build_network(args.preset, channels=args.channels, img_resolution=32)
        with torch.no_grad():      # make the zero-initialised output layer active
            torch.nn.init.xavier_uniform_(net.out_conv.weight, gain=0.2)
        D, shape = EDMPrecond(net).cuda().eval().requires_grad_(False), (args.channels, 32, 32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "fast"
    if mode == "fast":
        set_tuning(args.tune)
        make_fast(D, args.precision, compile=True, compile_mode=args.compile_mode)
        if args.cudnn_heuristics:
            torch.backends.cudnn.benchmark = False
        if args.cudnn_benchmark_limit is not None:
            torch.backends.cudnn.benchmark_limit = args.cudnn_benchmark_limit
    return D, shape


PREFETCH = True         # --no-prefetch: each batch draws its latents when it starts


def draw(D, shape, num, batch, steps, first_seed=0):
    """Samples of seeds first_seed .. first_seed + num - 1, in batches (the last one filled up with the seeds after)."""
    seed_batches = [range(s, s + batch) for s in range(first_seed, first_seed + num, batch)]
    with torch.no_grad():
        return torch.cat([r.samples.float() for r in generate_batches(
            D, shape, seed_batches, device="cuda", sampler="heun", num_steps=steps, prefetch=PREFETCH)])[:num]


def draw_on_streams(D, shape, num, batch, steps, k):
    """draw() split over k threads, thread j drawing seeds [j*num/k, (j+1)*num/k) on its own stream."""
    if num % (k * batch):
        raise ValueError(f"--num {num} must be a multiple of --streams x --batch = {k * batch}")
    parts, errors, streams, n = [None] * k, [], [torch.cuda.Stream() for _ in range(k)], num // k

    def work(j):
        try:
            with torch.cuda.stream(streams[j]):
                parts[j] = draw(D, shape, n, batch, steps, first_seed=j * n)
        except BaseException as e:  # re-raised in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(j,)) for j in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for s in streams:
        torch.cuda.current_stream().wait_stream(s)
    return torch.cat(parts)


def speed(args):
    D, shape = denoiser(args, args.mode)
    run = (lambda num: draw(D, shape, num, args.batch, args.steps)) if args.streams == 1 else \
        (lambda num: draw_on_streams(D, shape, num, args.batch, args.steps, args.streams))
    with Timer() as warm:     # compilation and autotuning happen on the first batch (in one thread)
        draw(D, shape, args.batch, args.batch, args.steps)
        if args.streams > 1:
            run(args.batch * args.streams)
    with Timer() as t:
        x = run(args.num)
    streams = f"-streams{args.streams}" if args.streams > 1 else ""
    write_result(args.out, f"sample-{args.preset}{'-c%d' % args.channels if args.channels != 3 else ''}-{args.mode}{fast_variant(args)}{streams}-n{args.num}-b{args.batch}", {
        "streams": args.streams,
        "num_samples": args.num, "batch": args.batch, "nfe": 2 * args.steps - 1, "first_batch_s": round(warm.seconds, 1),
        "seconds": round(t.seconds, 1), "img_per_s": round(args.num / t.seconds, 1),
        "seconds_incl_first_batch": round(t.seconds + warm.seconds, 1), "peak_memory_gib": peak_memory_gib(),
        "finite": bool(torch.isfinite(x).all()), "conv_batch_parts": conv_parts_chosen()})


def profile(args):
    D, shape = denoiser(args, args.mode)
    draw(D, shape, args.batch, args.batch, args.steps)      # compile and warm up
    summary = profile_kernels(lambda: draw(D, shape, args.batch, args.batch, args.steps), 1, "batch",
                              table=args.kernel_table, trace=args.trace)
    nfe = 2 * args.steps - 1
    write_result(args.out, f"profile-sample-{args.preset}-{args.mode}{fast_variant(args)}-b{args.batch}", {
        "batch": args.batch, "nfe": nfe, "img_per_s": round(args.batch / summary["batch_ms"] * 1000, 1),
        "gpu_busy_ms_per_network_call": round(summary["gpu_busy_ms_per_batch"] / nfe, 2), **summary,
        "conv_batch_parts": conv_parts_chosen()})


def compare(args):
    ref_D, shape = denoiser(args, "fp32")
    ref = draw(ref_D, shape, args.num, args.batch, args.steps)
    fast_D, _ = denoiser(args, "fast")
    fast = draw(fast_D, shape, args.num, args.batch, args.steps)
    diff = (fast - ref).abs()
    u8 = np.abs(to_uint8(fast).astype(int) - to_uint8(ref).astype(int))
    write_result(args.out, f"sample-compare-{Path(args.model).parent.name if args.model else args.preset}", {
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
    ap.add_argument("--streams", type=int, default=1, help="speed: samplers side by side on this many CUDA streams")
    ap.add_argument("--mode", choices=["fast", "fp32"], default="fast")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode of the fast path, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--precision", choices=["bf16", "fp16"], default="bf16", help="autocast dtype of the fast path")
    ap.add_argument("--cudnn-heuristics", action="store_true",
                    help="fast path: convolution algorithms from cuDNN's heuristics instead of timing them on the first call")
    ap.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                    help="fast path: how many cuDNN algorithms autotuning times per shape (0: all; default: torch's)")
    ap.add_argument("--no-prefetch", action="store_true",
                    help="draw each batch's latents when it starts, not between the previous batch's network calls")
    ap.add_argument("--kernel-table", default=None,
                    help="profile: also write every kernel's time and launches per batch to this CSV")
    ap.add_argument("--trace", default=None, help="profile: also write the profiler's Chrome trace here (.json.gz)")
    ap.add_argument("--tune", action="store_true", help="fast path: tune generated kernels (coordinate descent)")
    ap.add_argument("--save", default=None, help="compare: write both sample sets to this .npz")
    ap.add_argument("--load", default=None, help="fid: the .npz that compare --save wrote")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    a = ap.parse_args()
    PREFETCH = not a.no_prefetch
    {"speed": speed, "compare": compare, "profile": profile, "fid": fid}[a.what](a)
