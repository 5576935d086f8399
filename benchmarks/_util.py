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


def write_result(path, name: str, result: dict):
    """Merge `result` under `name` into the JSON file at `path`, with provenance."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"command": " ".join([Path(sys.executable).name] + sys.argv), "commit": git_commit(),
                  "device": device_info(), **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps({name: result}, indent=2))


def fast_variant(args) -> str:
    """Name suffix of a fast-path variant from the command line (compile mode, layout, tuning); '' otherwise."""
    if args.mode != "fast":
        return ""
    return ((f"-{args.precision}" if getattr(args, "precision", "bf16") != "bf16" else "")
            + ("-no-split-norm" if os.environ.get("DIFFREPRO_SPLIT_NORM") == "0" else "")
            + _conv_parts_variant()
            + (f"-{args.compile_mode}" if args.compile_mode else "")
            + ("-cudnn-heuristics" if getattr(args, "cudnn_heuristics", False) else "")
            + (f"-cudnn-limit{args.cudnn_benchmark_limit}" if getattr(args, "cudnn_benchmark_limit", None) is not None else "")
            + ("-nchw" if getattr(args, "no_channels_last", False) else "") + ("-tuned" if args.tune else "")
            + ("-no-prefetch" if getattr(args, "no_prefetch", False) else ""))


def _conv_parts_variant() -> str:
    setting = os.environ.get("DIFFREPRO_CONV_PARTS", "auto")
    return "" if setting == "auto" else "-no-conv-parts" if setting == "0" else f"-conv-parts{setting}"


def conv_parts_chosen() -> dict:
    """The batch split each 3x3 convolution shape ran in (nets/conv_parts.py): 'input -> output channels at HxW'."""
    from diffrepro.nets import conv_parts
    return {f"{x[1]}->{w[0]} at {x[2]}x{x[3]}, batch {x[0]}": n for (x, w, *_), n in conv_parts.choices.items()}


def set_tuning(on: bool):
    """Let torch.compile tune its generated (Triton) kernels' block sizes by coordinate descent."""
    if on:
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True


# GPU kernels by what they do, first match wins. diffrepro/nets/fused_norm.py's kernels are _gn_act_{fwd,bwd};
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
