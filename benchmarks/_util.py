"""Shared helpers of the benchmark scripts: device description, timing, JSON results."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from diffrepro.provenance import git_commit


def device_info() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    return info


def smooth_images(n, channels, res, seed=0, device="cpu"):
    """Low-pass random images in [-1, 1]: a stand-in dataset with image-like spectra (throughput does not
    depend on the pixels)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(n, channels, res // 4, res // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(res, res), mode="bicubic", align_corners=False)
    return (x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1).to(device)


def random_denoiser(preset, channels, res=32, seed=0):
    """An EDM-preconditioned U-Net with random weights whose output layer is active (its zero initialisation
    moved), in eval mode on the CPU: what the sampling benchmarks time (speed does not depend on the weights)."""
    from diffrepro.nets import build_network
    from diffrepro.precond import EDMPrecond
    torch.manual_seed(seed)
    net = build_network(preset, channels=channels, img_resolution=res)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(net.out_conv.weight, gain=0.2)
    return EDMPrecond(net).eval().requires_grad_(False)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        self.seconds = time.perf_counter() - self.t0


def cuda_ms(fn, repeats: int = 20, warmup: int = 1) -> float:
    """Milliseconds per call of fn() on the GPU, by CUDA events around `repeats` back-to-back calls."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def peak_memory_gib() -> float:
    return round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if torch.cuda.is_available() else float("nan")


def write_result(path, name: str, result: dict, quiet: bool = False):
    """Merge `result` under `name` into the JSON file at `path`, with provenance (command, commit, device);
    print it unless `quiet`."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"command": " ".join([Path(sys.executable).name] + sys.argv), "commit": git_commit(),
                  "device": device_info(), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if not quiet:
        print(json.dumps({name: result}, indent=2))


# GPU kernels by what they do, first match wins. diffrepro/fast/fused_norm.py's kernels are _gn_act_{fwd,bwd};
# kernels that torch.compile generates are named triton_{poi,red,per}_fused_<ops>: pointwise, or reductions.
KERNEL_KINDS = [("group norm (fused kernels)", ("_gn_act_fwd", "_gn_act_bwd")),
                ("fused reduction (generated)", ("triton_red", "triton_per")),
                ("fused pointwise (generated)", ("triton_poi", "triton_")),
                ("attention", ("flash", "fmha", "sdpa", "attention")),
                ("conv (cuDNN)", ("xmma", "cudnn", "implicit_gemm", "conv", "fprop", "dgrad", "wgrad")),
                ("matmul", ("gemm", "cutlass", "nvjet", "matmul")),
                ("optimizer/EMA", ("adam", "foreach", "multi_tensor", "lerp")),
                ("copy/convert", ("copy", "convert", "cat", "memcpy", "memset", "fill"))]


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile_kernels(fn, repeats: int, unit: str, table: str | None = None, trace: str | None = None) -> dict:
    """Call fn() `repeats` times under torch.profiler: wall time per call, the share of it the GPU
    is busy, kernel launches, and GPU time per call by kernel kind and for the top 20 kernels; with
    `table`, every kernel (kind, GPU ms and launches per call, name) as CSV at that path; with `trace`, the
    profiler's Chrome trace (.json, or .json.gz compressed) at that path."""
    from torch.profiler import ProfilerActivity, profile
    with Timer() as t, profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        sync()
    if trace:
        prof.export_chrome_trace(trace)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.self_device_time_total for e in kernels)
    by_kind = {}
    for e in kernels:
        kind = kernel_kind(e.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:20]
    ms = lambda us: round(us / 1000 / repeats, 3)   # noqa: E731  per call
    if table:
        import csv
        with open(table, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["kind", f"ms_per_{unit}", f"launches_per_{unit}", "kernel"])
            for e in sorted(kernels, key=lambda e: -e.self_device_time_total):
                w.writerow([kernel_kind(e.key), ms(e.self_device_time_total), round(e.count / repeats, 1), e.key])
    return {f"{unit}s": repeats, f"{unit}_ms": round(t.seconds * 1000 / repeats, 2),
            f"gpu_busy_ms_per_{unit}": ms(busy_us), "gpu_busy_fraction": round(busy_us / 1e6 / t.seconds, 3),
            f"kernel_launches_per_{unit}": round(sum(e.count for e in kernels) / repeats, 1),
            f"ms_per_{unit}_by_kind": {k: ms(v) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            f"top_kernels_ms_per_{unit}": [[e.key[:120], ms(e.self_device_time_total), e.count // repeats] for e in top]}
