"""Training throughput of a U-Net preset at a given batch size, and loss curves of the fast path
against full fp32.

    python benchmarks/bench_train.py speed --preset ddpmpp-cifar --batch 512 --mode fast
    python benchmarks/bench_train.py speed --preset small --channels 1 --batch 256 --mode fast --compile-mode reduce-overhead
    python benchmarks/bench_train.py speed --preset ddpmpp-cifar --batch 512 --mode fp32
    python benchmarks/bench_train.py curve --preset medium --batch 512 --steps 400 --mode fp32 --seed 0
    python benchmarks/bench_train.py profile --preset ddpmpp-cifar --batch 512 --mode fast --steps 10
    torchrun --standalone --nproc_per_node 2 benchmarks/bench_train.py speed ...   # data parallel, same global batch

Modes: `fast` = what a training entry with `precision: bf16, fast: true` runs (bf16 autocast, the speed
paths of diffrepro/fast, torch.compile with --compile-mode), fused Adam, data resident on the GPU;
`plain` = the plain network under bf16 autocast and torch.compile (the baseline every speed path is
measured against, benchmarks/bench_paths.py); `bf16` = the plain network under bf16 autocast, eager;
`fp32` = the plain network in fp32 with TF32 off (the reference). `profile` times the GPU kernels of a
few steps with torch.profiler: the share of the step the GPU is busy, and where that time goes. Data: a
fixed set of smooth random images (the curves compare modes on identical data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, peak_memory_gib, profile_kernels, smooth_images, write_result  # noqa: E402
from diffrepro import distributed  # noqa: E402
from diffrepro.fast import compile_model  # noqa: E402
from diffrepro.loss import DenoisingLoss  # noqa: E402
from diffrepro.nets import build_network, count_parameters  # noqa: E402
from diffrepro.precond import EDMPrecond  # noqa: E402
from diffrepro.sigma_dist import LogNormal  # noqa: E402
from diffrepro.training import TrainConfig, Trainer  # noqa: E402


def trainer(args, mode, steps, seed):
    # under torchrun: data parallel over the launched processes, --batch stays the global batch
    device = distributed.init_from_env() if distributed.launched() else torch.device("cuda")
    torch.manual_seed(seed)
    net = build_network(args.preset, channels=args.channels, img_resolution=args.res)
    data = smooth_images(args.data_size, args.channels, args.res, device=device)
    cfg = TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, seed=seed, log_every=10,
                      checkpoint_every=10 * max(1, steps // 10) if steps >= 10 else 10,
                      precision="fp32" if mode == "fp32" else "bf16", fast=mode == "fast",
                      compile_mode=args.compile_mode)
    tr = Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), data, cfg, device=device, progress=False)
    if mode == "plain":
        tr.model = compile_model(tr.model, args.compile_mode)
    return tr, net


def _name(base, tr, args):
    base += f"-{args.compile_mode}" if args.compile_mode and args.mode in ("fast", "plain") else ""
    return base if tr.world == 1 else f"{base}-x{tr.world}"


def speed(args):
    tr, net = trainer(args, args.mode, args.warmup + args.steps, 0)
    with Timer() as warm:
        for _ in range(args.warmup):
            tr.step()
    with Timer() as t:
        for _ in range(args.steps):
            tr.step()
    s_per_kimg = t.seconds / (args.steps * args.batch / 1000)
    if tr.rank:
        return
    write_result(args.out, _name(f"train-{args.preset}-b{args.batch}-{args.mode}", tr, args), {
        "params": count_parameters(net), "batch": args.batch, "steps_timed": args.steps,
        "warmup_steps": args.warmup, "warmup_s": round(warm.seconds, 2), "s_per_kimg": round(s_per_kimg, 4),
        "img_per_s": round(args.steps * args.batch / t.seconds, 1), "peak_memory_gib": peak_memory_gib()})


def profile(args):
    tr, net = trainer(args, args.mode, args.warmup + args.steps, 0)
    for _ in range(args.warmup):
        tr.step()
    summary = profile_kernels(tr.step, args.steps, "step")
    write_result(args.out, _name(f"profile-{args.preset}-b{args.batch}-{args.mode}", tr, args),
                 {"params": count_parameters(net), **summary})


def curve(args):
    tr, _ = trainer(args, args.mode, args.steps, args.seed)
    with Timer() as t:
        tr.run()
    rows = [(r["step"], r["value"]) for r in tr.state.metrics if r["metric"] == "train_loss"]
    if tr.rank:
        return
    write_result(args.out, _name(f"curve-{args.preset}-b{args.batch}-{args.mode}-s{args.seed}", tr, args), {
        "steps": args.steps, "seconds": round(t.seconds, 1), "loss": rows, "peak_memory_gib": peak_memory_gib()})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "curve", "profile"])
    ap.add_argument("--preset", default="ddpmpp-cifar")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--mode", choices=["fast", "plain", "bf16", "fp32"], default="fast")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (fast, plain), e.g. reduce-overhead")
    ap.add_argument("--data-size", type=int, default=10000)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    a = ap.parse_args()
    {"speed": speed, "curve": curve, "profile": profile}[a.what](a)
