"""Trace of the training target's covariance vs sigma, baseline vs Stable Target Field (claim T1;
the STF paper's variance figure).

Definition. For a training set {y_i} (N images, D dimensions), a noise level sigma and a target rule T,

    V_T(sigma) = (1/D) E_x[ tr Cov(T | x) ],     x = y_i + sigma n,  i ~ U{1..N},  n ~ N(0, I),

the covariance being over everything a training step draws that x does not fix: which training image
produced x (i ~ p(i | x)) and, for STF, the reference batch. Both rules have E[T | x] = D*(x; sigma),
the ideal denoiser of the training set (the baseline by definition; STF because its softmax over R is
the exact posterior given R, see stf.py, tested by enumeration), so

    V_T(sigma) = (1/D) E ||T - D*(x; sigma)||^2,

which we estimate by Monte Carlo over (i, n, R), with D* computed exactly (float64, IdealDenoiser).
The baseline (T = y, i.e. |R| = 1) gives V = mmse(sigma) / D, the ideal denoiser's error. The same
draws (i, n) serve every rule (common random numbers), so ratios are paired. STF references are drawn
exactly as in training: one draw of |R|-1 indices per batch of `batch_size` samples.

In the paper's score parameterization the target is (T - x) / sigma^2, whose covariance given x is
Cov(T | x) / sigma^4: `trace_score` = trace / sigma^4. Ratios are the same in both spaces.
Limits: V -> 0 as sigma -> 0 for every rule (the posterior sits on the own image); as sigma -> inf the
baseline tends to the per-dimension data variance and STF to about that over |R| (R's mean, weights
near uniform), so the ratio keeps falling with sigma while the score-space values of both vanish; the
absolute (score-space) reduction is largest at intermediate sigma, where the baseline's trace peaks.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np
import torch

from ..ideal import IdealDenoiser
from .stf import StableTargetField


def target_covariance_trace(data: torch.Tensor, sigmas: Iterable[float], ref_batch: Iterable[int] | int = (64, 256, 1024),
                            n_samples: int = 512, generator: Optional[torch.Generator] = None, *,
                            batch_size: int = 64, chunk_size: int = 1024, dtype: torch.dtype = torch.float32):
    """V_T(sigma) (see module docstring) for the baseline and STF at each |R| in `ref_batch`.

    data: (N, ...) float training images (in [-1, 1]); all draws come from `generator` (CPU default).
    Returns a tidy DataFrame, one row per (method, ref_batch, sigma): trace (per dimension),
    trace_stderr, trace_score (= trace / sigma^4), ratio (to the baseline, paired) and ratio_stderr
    (delta method), n_samples, n_train, dim. The baseline row has ref_batch = 1.
    """
    import pandas as pd

    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    ref_batch = [int(ref_batch)] if isinstance(ref_batch, (int, np.integer)) else [int(r) for r in ref_batch]
    data = data.detach()
    n_train, dim = data.shape[0], int(np.prod(data.shape[1:]))
    ideal = IdealDenoiser(data)
    rules = {r: StableTargetField(data, ref_batch=r, chunk_size=chunk_size, dtype=dtype) for r in ref_batch}
    rows = []
    for sigma in sigmas:
        sigma = float(sigma)
        err = {1: []} | {r: [] for r in ref_batch}
        for start in range(0, n_samples, batch_size):
            b = min(batch_size, n_samples - start)
            idx = torch.randint(0, n_train, (b,), generator=generator, device=generator.device).to(data.device)
            y = data[idx]
            noise = torch.randn(y.shape, generator=generator, device=generator.device, dtype=y.dtype).to(data.device)
            sig = torch.full((b,), sigma, dtype=torch.float32, device=data.device)
            x = y + noise * sig.reshape(-1, *[1] * (y.ndim - 1))       # as DenoisingLoss forms it
            d_star = ideal(x.double(), sig.double()).reshape(b, -1)
            err[1].append((y.double().reshape(b, -1) - d_star).square().sum(1) / dim)
            for r, rule in rules.items():
                t = rule(y, x, sig, generator).double().reshape(b, -1)
                err[r].append((t - d_star).square().sum(1) / dim)
        base = torch.cat(err[1]).cpu().numpy()
        for r, e in err.items():
            e = torch.cat(e).cpu().numpy()
            mean, mb = float(e.mean()), float(base.mean())
            ratio = mean / mb if mb > 0 else math.nan
            if mb > 0 and len(e) > 1:   # delta method for a ratio of paired means
                c = np.cov(np.stack([e, base]))
                ratio_se = math.sqrt(max(c[0, 0] - 2 * ratio * c[0, 1] + ratio ** 2 * c[1, 1], 0) / len(e)) / mb
            else:
                ratio_se = math.nan
            rows.append(dict(method="baseline" if r == 1 else "stf", ref_batch=r, sigma=sigma, trace=mean,
                             trace_stderr=float(e.std(ddof=1) / math.sqrt(len(e))) if len(e) > 1 else math.nan,
                             trace_score=mean / sigma ** 4, ratio=ratio, ratio_stderr=ratio_se,
                             n_samples=len(e), n_train=n_train, dim=dim))
    return pd.DataFrame(rows)


def plot_target_variance(result, path, title: Optional[str] = None):
    """Three panels over log sigma: trace per dimension in image space (linear axis, so the regime where
    both traces vanish shows), the paper's score-space trace (trace / sigma^4, log axis), and the
    STF / baseline ratio with its standard error (undefined, so not drawn, where the baseline is 0)."""
    from ..io import atomic_savefig
    from ..plots import plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    groups = sorted(result.groupby("ref_batch"), key=lambda kv: kv[0])
    cmap = plt.get_cmap("viridis")
    n_stf = max(len(groups) - 1, 1)
    for k, (r, g) in enumerate(groups):
        g = g.sort_values("sigma")
        label = "baseline (target y)" if r == 1 else f"STF |R| = {r}"
        style = dict(color="black", ls="--") if r == 1 else dict(color=cmap(0.15 + 0.7 * (k - 1) / max(n_stf - 1, 1)))
        axes[0].plot(g["sigma"], g["trace"], marker="o", ms=3, label=label, **style)
        pos = g["trace"] > 0
        axes[1].plot(g["sigma"][pos], g["trace_score"][pos], marker="o", ms=3, label=label, **style)
        if r != 1:
            ok = np.isfinite(g["ratio"]) & (g["ratio"] > 0)
            axes[2].errorbar(g["sigma"][ok], g["ratio"][ok], yerr=g["ratio_stderr"][ok], marker="o", ms=3,
                             capsize=2, label=label, **style)
    axes[2].axhline(1.0, color="black", ls="--", lw=1)
    ylabels = ["(1/D) E tr Cov[target | x]", "(1/D) E tr Cov[score target | x]  (= trace / σ⁴)",
               "STF / baseline"]
    for ax, yl in zip(axes, ylabels):
        ax.set_xscale("log")
        if ax is not axes[0]:
            ax.set_yscale("log")
        ax.set_xlabel("σ")
        ax.set_ylabel(yl)
        ax.grid(True, which="major", alpha=0.3)
    top = result["trace_score"].max()
    if np.isfinite(top) and top > 0:
        axes[1].set_ylim(bottom=top * 1e-8)        # rounding-level values near sigma -> 0 would flatten the plot
    axes[0].legend(fontsize=8)
    first = result.iloc[0]
    fig.suptitle(title or f"Target covariance trace: N = {first['n_train']}, D = {first['dim']}, "
                          f"{first['n_samples']} samples per σ", fontsize=10)
    atomic_savefig(path, fig, dpi=130)
    plt.close(fig)
    return path


def benchmark_target_fn(n_train: int = 50_000, batch_size: int = 64, ref_batch: int = 4096, shape=(3, 32, 32),
                        device="cpu", chunk_size: int = 1024, dtype: torch.dtype = torch.float32,
                        repeats: int = 10, seed: int = 0) -> dict:
    """Time and peak memory of one STF target call (draw + target) on random data in [-1, 1] with EDM's
    log-normal sigmas. Peak memory is what the call allocates above what was live before it:
    torch.cuda.max_memory_allocated on CUDA; on CPU the profiler's memory timeline (NaN if unavailable)."""
    import time

    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    data = torch.rand(n_train, *shape, generator=g, device=device) * 2 - 1
    rule = StableTargetField(data, ref_batch=ref_batch, chunk_size=chunk_size, dtype=dtype)
    y = data[:batch_size]
    sigma = (torch.randn(batch_size, generator=g, device=device) * 1.2 - 1.2).exp()
    x = y + sigma.reshape(-1, *[1] * len(shape)) * torch.randn(y.shape, generator=g, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        rule(y, x, sigma, g)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        rule(y, x, sigma, g)
        sync()
        times.append(time.perf_counter() - t0)
    peak = math.nan
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        live = torch.cuda.memory_allocated(device)
        rule(y, x, sigma, g)
        sync()
        peak = (torch.cuda.max_memory_allocated(device) - live) / 2 ** 20
    else:
        try:
            from torch.profiler import ProfilerActivity, profile
            from torch.profiler._memory_profiler import MemoryProfileTimeline
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                         with_stack=True) as prof:
                rule(y, x, sigma, g)
            _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device)
            total = np.asarray(sizes).sum(1)
            peak = float(total.max() - total[0]) / 2 ** 20
        except Exception:  # private profiler API: report NaN rather than fail
            pass
    times = np.sort(np.asarray(times))
    return dict(device=str(device), n_train=n_train, batch_size=batch_size, ref_batch=ref_batch, dim=int(np.prod(shape)),
                chunk_size=chunk_size, dtype=str(dtype), threads=torch.get_num_threads(),
                time_ms_median=float(np.median(times) * 1e3), time_ms_min=float(times[0] * 1e3), peak_mib=peak)
