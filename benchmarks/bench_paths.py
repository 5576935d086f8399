"""Which speed paths earn their keep: the plain compiled network against the fast one, with all kept paths
and with each path alone or left out, on the workloads the project runs, in one process per workload; and
how long a process waits for its first training step or sampling batch with a cold and a warm compile cache.

    python benchmarks/bench_paths.py speed --workload train-ddpmpp                     # plain, fast
    python benchmarks/bench_paths.py speed --workload train-ddpmpp --variants plain,fast,no:fused_norm,no:matmul_conv
    python benchmarks/bench_paths.py speed --workload sample-ddpmpp --variants plain,fast,only:channels_last
    python benchmarks/bench_paths.py coldwarm --workload train-small-ro                # two processes, one fresh cache

Variants (diffrepro/fast; every one runs under bf16 autocast and torch.compile with the workload's mode):
  plain        the network as written (diffrepro/nets/unet.py), contiguous (NCHW) layout: the baseline
  fast         every kept speed path (diffrepro.fast.PATHS): what `fast: true` and the sample stage run
  only:PATH    channels_last plus PATH alone (every other path needs the channels-last layout)
  no:PATH      every kept path but PATH: what PATH adds to the fast network
A path is kept if it gains >= 5% end to end on a workload the project runs (benchmarks/RESULTS.md).

Workloads: training at the batch of the params.yaml entries that use the preset (`-ro`: with CUDA graphs,
compile_mode reduce-overhead, as `small-gpu`), timed over --steps steps after --warmup steps (the first
compiles); sampling EDM's Heun 18 steps (35 network calls) at the sample stage's batch of 1,000, random
weights, timed over --batches batches after one (that compiles). Each measurement prints one line (with its
speed over the first variant's) and is kept in --out (JSON, with the command, the commit and the device),
named paths-<workload>-<variant>.

`coldwarm` starts two processes one after the other, both with a new, empty compile cache folder
(diffrepro.fast.use_compile_cache): the first compiles everything, the second should find it all. Each
reports the time from its launch to the end of its first training step or sampling batch.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_LAUNCH = float(os.environ.get("BENCH_PATHS_LAUNCHED", time.time()))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._util import Timer, peak_memory_gib, random_denoiser, smooth_images, write_result  # noqa: E402
from diffrepro import fast  # noqa: E402

T_IMPORTED = time.time()
DEVICE = "cuda"

WORKLOADS = {
    "train-small": dict(kind="train", preset="small", channels=1, batch=256),
    "train-small-ro": dict(kind="train", preset="small", channels=1, batch=256, compile_mode="reduce-overhead"),
    "train-medium": dict(kind="train", preset="medium", channels=1, batch=256),
    "train-medium-ro": dict(kind="train", preset="medium", channels=1, batch=256, compile_mode="reduce-overhead"),
    "train-ddpmpp": dict(kind="train", preset="ddpmpp-cifar", channels=3, batch=512),
    "sample-small": dict(kind="sample", preset="small", channels=1, batch=1000),
    "sample-ddpmpp": dict(kind="sample", preset="ddpmpp-cifar", channels=3, batch=1000),
    # for checking this script on a CPU (--device cpu)
    "train-tiny": dict(kind="train", preset="tiny", channels=3, batch=16),
    "sample-tiny": dict(kind="sample", preset="tiny", channels=3, batch=16),
}


def variant_paths(variant: str):
    """The speed paths of a variant (None: the plain network)."""
    if variant == "plain":
        return None
    if variant == "fast":
        return fast.PATHS
    kind, _, path = variant.partition(":")
    if path not in fast.PATHS or kind not in ("only", "no") or (kind, path) == ("no", "channels_last"):
        raise SystemExit(f"unknown variant {variant!r}: plain, fast, only:PATH or no:PATH, PATH one of "
                         f"{list(fast.PATHS)} (no:channels_last is not one: the other paths need that layout)")
    return [path] if kind == "only" else [p for p in fast.PATHS if p != path]


def build_trainer(w: dict, variant: str, steps: int):
    """A Trainer as `precision: bf16` + `fast` builds it, with the variant's paths swapped in (the same calls)."""
    from diffrepro.loss import DenoisingLoss
    from diffrepro.nets import build_network
    from diffrepro.precond import EDMPrecond
    from diffrepro.sigma_dist import LogNormal
    from diffrepro.training import TrainConfig, Trainer
    torch.manual_seed(0)
    D = EDMPrecond(build_network(w["preset"], channels=w["channels"], img_resolution=32))
    paths = variant_paths(variant)
    if paths is not None:
        fast.make_fast(D, paths=paths)
    cfg = TrainConfig(steps=steps, batch_size=w["batch"], lr=2e-4, log_every=10 ** 6, checkpoint_every=10 ** 6,
                      precision="bf16")
    data = smooth_images(10000, w["channels"], 32, device=DEVICE)
    tr = Trainer(D, DenoisingLoss(LogNormal()), data, cfg, device=DEVICE, progress=False)
    tr.model = fast.compile_model(tr.model, w.get("compile_mode"))
    return tr


def build_sampler(w: dict, variant: str):
    """An EDM denoiser for sampling, bf16 autocast around the raw network, the variant's paths, compiled."""
    D = random_denoiser(w["preset"], w["channels"]).to(DEVICE)
    paths = variant_paths(variant)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if paths is None:
        D.net = fast.compile_model(fast.AutocastNet(D.net), w.get("compile_mode"))
    else:
        fast.make_fast(D, paths=paths, precision="bf16", compile=True, compile_mode=w.get("compile_mode"))
    return D


def sample_batch(D, w, first_seed=0):
    from diffrepro.samplers import generate_batches
    with torch.no_grad():
        seeds = range(first_seed, first_seed + w["batch"])
        x = next(generate_batches(D, (w["channels"], 32, 32), [seeds], device=DEVICE, sampler="heun", num_steps=18))
    return x.samples


STEPS = {"tiny": 5, "small": 100, "medium": 60, "ddpmpp-cifar": 30}     # timed training steps by default: a few seconds


def measure(workload: str, variant: str, args) -> dict:
    w = WORKLOADS[workload]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    if w["kind"] == "train":
        steps = args.steps or STEPS[w["preset"]]
        tr = build_trainer(w, variant, args.warmup + steps)
        with Timer() as first:
            tr.step()
        with Timer() as warm:
            for _ in range(args.warmup - 1):
                tr.step()
        with Timer() as t:
            for _ in range(steps):
                loss = tr.step()
        n = steps * w["batch"]
        out = {"kind": "train", "batch": w["batch"], "steps_timed": steps, "warmup_steps": args.warmup,
               "first_step_s": round(first.seconds, 1), "warmup_s": round(warm.seconds, 2),
               "s_per_kimg": round(t.seconds / n * 1000, 4), "img_per_s": round(n / t.seconds, 1),
               "finite": bool(torch.isfinite(loss))}
        del tr
    else:
        D = build_sampler(w, variant)
        with Timer() as first:
            sample_batch(D, w)
        with Timer() as t:
            for k in range(args.batches):
                x = sample_batch(D, w, first_seed=(k + 1) * w["batch"])
        n = args.batches * w["batch"]
        out = {"kind": "sample", "batch": w["batch"], "nfe": 35, "batches_timed": args.batches,
               "first_batch_s": round(first.seconds, 1), "img_per_s": round(n / t.seconds, 1),
               "s_per_batch": round(t.seconds / args.batches, 3), "finite": bool(torch.isfinite(x).all())}
        del D
    out.update(workload=workload, variant=variant, preset=w["preset"], channels=w["channels"],
               compile_mode=w.get("compile_mode"), paths=sorted(variant_paths(variant) or []),
               peak_memory_gib=peak_memory_gib())
    gc.collect()
    torch.compiler.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _line(r: dict, base: dict | None) -> str:
    rate = f"{r['s_per_kimg']:.4f} s/kimg" if r["kind"] == "train" else f"{r['s_per_batch']:.3f} s/batch"
    first = r.get("first_step_s", r.get("first_batch_s"))
    gain = f"  {r['img_per_s'] / base['img_per_s']:.3f}x {base['variant']}'s speed" if base else ""
    return (f"{r['workload']:16s} {r['variant']:22s} {rate}  {r['img_per_s']:9.1f} img/s  first {first:6.1f} s  "
            f"{r['peak_memory_gib']:5.1f} GiB{gain}")


def speed(args):
    for workload in args.workload.split(","):
        base = None
        for variant in args.variants.split(","):
            r = measure(workload, variant, args)
            write_result(args.out, f"paths-{workload}-{variant}", r, quiet=True)
            print(_line(r, base), flush=True)
            base = base or r


def first(args):
    """One process: build the workload's fast network, run one training step or sampling batch; report the
    time from launch (T_LAUNCH) to its end, as JSON on the last line."""
    folder = fast.use_compile_cache(args.cache_dir)
    w = WORKLOADS[args.workload]
    t0 = time.time()
    if w["kind"] == "train":
        tr = build_trainer(w, args.variant, 1)
        built = time.time()
        tr.step()
    else:
        D = build_sampler(w, args.variant)
        built = time.time()
        sample_batch(D, w)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    done = time.time()
    print(json.dumps({"import_s": round(T_IMPORTED - T_LAUNCH, 2), "build_s": round(built - t0, 2),
                      "first_s": round(done - built, 2), "launch_to_first_s": round(done - T_LAUNCH, 2),
                      "cache": str(folder)}))


def coldwarm(args):
    for workload in args.workload.split(","):
        cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="compile-cache-"))
        if cache.exists() and any(cache.iterdir()):
            raise SystemExit(f"{cache} is not empty: coldwarm needs a fresh cache folder")
        env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
        runs = {}
        for run in ("cold", "warm"):
            env["BENCH_PATHS_LAUNCHED"] = repr(time.time())
            out = subprocess.run([sys.executable, __file__, "first", "--workload", workload, "--variant", args.variant,
                                  "--cache-dir", str(cache), "--device", args.device], env=env, capture_output=True,
                                 text=True, cwd=ROOT)
            if out.returncode:
                raise SystemExit(f"{workload} ({run}) failed:\n{out.stderr[-4000:]}")
            runs[run] = json.loads(out.stdout.strip().splitlines()[-1])
            r = runs[run]
            print(f"{workload:16s} {args.variant:8s} {run}: {r['launch_to_first_s']:7.1f} s from launch to the first "
                  f"{'step' if WORKLOADS[workload]['kind'] == 'train' else 'batch'} (import {r['import_s']:.1f} s, build "
                  f"{r['build_s']:.1f} s, first {r['first_s']:.1f} s)", flush=True)
        write_result(args.out, f"coldwarm-{workload}-{args.variant}", {"workload": workload, "variant": args.variant,
                     **{f"{run}_{k}": v for run, r in runs.items() for k, v in r.items() if k != "cache"}}, quiet=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "coldwarm", "first"])
    ap.add_argument("--workload", default="train-small-ro", help=f"comma-separated, of {list(WORKLOADS)}")
    ap.add_argument("--variants", default="plain,fast", help="speed: comma-separated variants; each line compares "
                                                            "its speed with the first's")
    ap.add_argument("--variant", default="fast", help="coldwarm: the variant whose start is timed")
    ap.add_argument("--steps", type=int, default=None, help=f"training: timed steps (default by preset: {STEPS})")
    ap.add_argument("--warmup", type=int, default=10, help="training: steps before timing (the first compiles)")
    ap.add_argument("--batches", type=int, default=2, help="sampling: timed batches")
    ap.add_argument("--cache-dir", default=None, help="coldwarm: a new folder for the compile cache (default: a "
                                                       "temporary one); speed: use_compile_cache's default")
    ap.add_argument("--device", default="cuda", help="cpu: only to check the script (tiny workloads)")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    a = ap.parse_args()
    DEVICE = a.device
    if a.what == "speed" and a.cache_dir:
        fast.use_compile_cache(a.cache_dir)
    {"speed": speed, "coldwarm": coldwarm, "first": first}[a.what](a)
