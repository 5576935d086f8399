"""Training throughput of a U-Net preset at a given batch size, and loss curves of the fast path
against full fp32.

    python benchmarks/bench_train.py speed --preset ddpmpp-cifar --batch 512 --mode fast
    python benchmarks/bench_train.py speed --preset ddpmpp-cifar --batch 512 --mode fp32
    python benchmarks/bench_train.py curve --preset medium --batch 512 --steps 400 --mode fp32 --seed 0
    python benchmarks/bench_train.py profile --preset ddpmpp-cifar --batch 512 --mode fast --steps 10
    torchrun --standalone --nproc_per_node 2 benchmarks/bench_train.py speed ...   # data parallel, same global batch

`fast` = bf16 autocast + torch.compile + channels-last + fused Adam, data resident on the GPU;
`bf16` = bf16 autocast without compilation (the `small-gpu` training setting); `fp32` = plain fp32 with
TF32 off (the reference). `profile` times the GPU kernels of a few steps with torch.profiler: the share
of the step the GPU is busy, and where that time goes. Data: a fixed set of smooth random images
(throughput does not depend on the pixels; the curves compare modes on identical data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, fast_variant, peak_memory_gib, profile_kernels, set_tuning, write_result  # noqa: E402
from diffrepro.loss import DenoisingLoss  # noqa: E402
from diffrepro.nets import build_network, count_parameters  # noqa: E402
from diffrepro.precond import EDMPrecond  # noqa: E402
from diffrepro.sigma_dist import LogNormal  # noqa: E402
from diffrepro import distributed  # noqa: E402
from diffrepro.training import TrainConfig, Trainer  # noqa: E402


def smooth_images(n, channels, res, seed=0, device="cpu"):
    """Low-pass random images in [-1, 1]: a stand-in dataset with image-like spectra."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, channels, res // 4, res // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(res, res), mode="bicubic", align_corners=False)
    return (x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1).to(device)


def trainer(args, mode, steps, seed):
    # under torchrun: data parallel over the launched processes, --batch stays the global batch
    device = distributed.init_from_env() if distributed.launched() else torch.device("cuda")
    set_tuning(args.tune)
    torch.manual_seed(seed)
    net = build_network(args.preset, channels=args.channels, img_resolution=args.res)
    data = smooth_images(args.data_size, args.channels, args.res, device=device)
    fast = mode == "fast"
    cfg = TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, seed=seed, log_every=10,
                      checkpoint_every=10 * max(1, steps // 10) if steps >= 10 else 10,
                      precision="fp32" if mode == "fp32" else "bf16", compile=fast,
                      compile_mode=args.compile_mode, channels_last=fast and not args.no_channels_last)
    return Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), data, cfg, device=device, progress=False), net


def _name(base, tr, args=None):
    if args is not None:
        base += fast_variant(args)
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
    write_result(args.out, _name(f"curve-{args.preset}-b{args.batch}-{args.mode}-s{args.seed}", tr), {
        "steps": args.steps, "seconds": round(t.seconds, 1), "loss": rows, "peak_memory_gib": peak_memory_gib()})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "curve", "profile"])
    ap.add_argument("--preset", default="ddpmpp-cifar")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--mode", choices=["fast", "bf16", "fp32"], default="fast")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode of the fast path, e.g. reduce-overhead")
    ap.add_argument("--tune", action="store_true", help="fast path: tune generated kernels (coordinate descent)")
    ap.add_argument("--no-channels-last", action="store_true", help="fast path without channels-last")
    ap.add_argument("--data-size", type=int, default=10000)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    a = ap.parse_args()
    {"speed": speed, "curve": curve, "profile": profile}[a.what](a)
