"""Generalization gap per noise level (Kaiser & Kollmann 2026; methods.md section 5 (a), claim K2).

Definition. For a denoiser D, a set S of clean examples (model space: images in [-1, 1], NCHW, or
toy points (N, d)) and a noise level sigma,

    mse_S(sigma) = E_{y in S, n ~ N(0, I)} ||D(y + sigma n; sigma) - y||^2 / d      (unweighted, per dimension)
    gap(sigma)   = mse_heldout(sigma) - mse_train(sigma)

estimated on n_per_set examples of each set (the whole set when it is not larger, otherwise a seeded
subset: the first n_per_set of one permutation, so a larger n extends a smaller one), with R = n_per_set *
repeats evaluation rows per set and sigma: row m is the set's example m % n_S (a small set is cycled).

Fixed, paired noise. Row m at sigma index j gets row m of a noise table drawn from per-(seed, j, block)
generators, block = m // NOISE_BLOCK, each block a full (NOISE_BLOCK, *shape) draw. The noise thus depends
only on (seed, j, m) and the example shape: train row m and held-out row m see the same noise tensor, a
second call (or another checkpoint, another batch size) sees the same draws, and more rows keep the
draws of fewer. Noise is drawn on `noise_device` (default the CPU, so results do not depend on the
compute device) and moved over.

Standard errors are over examples: each example's error is averaged over its draws first, then
se = std / sqrt(n_S); se_gap pairs train example k with held-out example k (they share their noise rows)
when both sets have the same number of examples. For a set used whole they include the spread between
its examples, not only the noise.

Shape of the curve. With EDM preconditioning D = c_skip x + c_out F and c_out ~ sigma -> 0, so at small
sigma any finite network is close to the identity on both sets: gap -> 0. At large sigma the ideal
denoiser returns the training mean ybar (a trained one about that), so
gap -> (mean_h ||y_h - ybar||^2 - mean_t ||y_t - ybar||^2) / d, about 2 var / N: negligible for real
training sets, but for a handful of images (N = 8: ~0.08 on Fashion-MNIST in [-1, 1]) as large as the
memorization gap itself. A trained network's overfitting shows in between
(claim K2). The ideal denoiser of the training set (an exact memorizer) instead snaps held-out inputs to
their nearest training example at small sigma, so its gap is largest there, a plateau at
mean_h min_j ||y_h - y_j||^2 / d; summarize_gap's peak_clear tells a real interior peak from noise on
such a plateau.
"""
from __future__ import annotations

import contextlib
import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..seeding import derive_seed

__all__ = ["NOISE_BLOCK", "sigma_grid", "subset_indices", "noise_rows", "eval_mode", "denoising_errors", "gap_curves",
           "checkpoint_gap_curves", "summarize_gap", "plot_gap", "INTERMEDIATE_SIGMA", "weighted_gap",
           "gap_significance", "weighted_gap_peak", "intermediate_gap", "heldout_loss"]

NOISE_BLOCK = 256   # rows per seeded noise generator; part of the noise definition, independent of batch_size


def sigma_grid(num: int = 12, sigma_min: float = 0.002, sigma_max: float = 80.0) -> np.ndarray:
    """num noise levels, uniform in ln(sigma) (EDM's range by default)."""
    return np.exp(np.linspace(math.log(sigma_min), math.log(sigma_max), num))


def subset_indices(n_items: int, n: int, seed: int) -> torch.Tensor:
    """The examples used: all, in order, when n >= n_items; else the first n of a seeded permutation
    (the same permutation for train and held-out sets of equal size, so train == heldout stays paired)."""
    if n >= n_items:
        return torch.arange(n_items)
    g = torch.Generator().manual_seed(derive_seed(seed, "gap-subset", n_items))
    return torch.randperm(n_items, generator=g)[:n]


def noise_rows(seed: int, sigma_index: int, start: int, stop: int, shape: Sequence[int], device="cpu",
               dtype=torch.float32) -> torch.Tensor:
    """Rows [start, stop) of the noise table of sigma index `sigma_index` (see the module docstring)."""
    blocks = []
    for b in range(start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK + 1):
        g = torch.Generator(device=torch.device(device)).manual_seed(derive_seed(seed, "gap-noise", sigma_index, b))
        block = torch.randn((NOISE_BLOCK, *shape), generator=g, device=device, dtype=dtype)
        lo, hi = max(start - b * NOISE_BLOCK, 0), min(stop - b * NOISE_BLOCK, NOISE_BLOCK)
        blocks.append(block[lo:hi])
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        raise TypeError("expected model-space floats (images in [-1, 1], NCHW), got uint8; "
                        "use PreparedDataset.train_float() / heldout_float()")
    return torch.from_numpy(np.ascontiguousarray(x))


def _infer_device(denoiser, data: torch.Tensor) -> torch.device:
    params = getattr(denoiser, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    data_attr = getattr(denoiser, "data", None)   # IdealDenoiser keeps its dataset on the device it runs on
    if isinstance(data_attr, torch.Tensor):
        return data_attr.device
    return data.device


@contextlib.contextmanager
def eval_mode(denoiser):
    """Evaluate an nn.Module denoiser in eval mode (no dropout: the numbers must be reproducible),
    restoring its previous mode afterwards; anything else passes through."""
    was_training = isinstance(denoiser, torch.nn.Module) and denoiser.training
    if was_training:
        denoiser.eval()
    try:
        yield denoiser
    finally:
        if was_training:
            denoiser.train()


@torch.no_grad()
def denoising_errors(denoiser, train, heldout, sigmas, n_per_set: int = 1000, seed: int = 0,
                     batch_size: int = 256, device=None, repeats: int = 1, labels_train=None,
                     labels_heldout=None, noise_device="cpu", dtype=torch.float32, per_example: bool = False):
    """Per-sigma training and held-out denoising MSE of `denoiser` with identical noise draws.

    denoiser: D(x, sigma, class_labels) (a Preconditioning, run in eval mode; an IdealDenoiser; any callable:
    then pass `device` unless it runs where the data lies).
    train, heldout: (N, ...) model-space tensors or float arrays, same example shape.
    sigmas: 1-D sequence of noise levels (sigma_grid()).
    Each set is evaluated on R = n_per_set * repeats rows at every sigma: row m is the set's example
    m % n_S (n_S = min(n_per_set, len(set)) examples: the whole set, or a seeded subset) with noise row m.
    A set smaller than n_per_set is therefore cycled (each example gets R / n_S draws); train row m and
    held-out row m always share their noise. device: where D runs (default: the denoiser's parameters'
    device, else the data's). Inputs y + sigma n are formed in `dtype`; errors are accumulated in float64
    on the device and copied to the host once.

    Returns one row per sigma: sigma_index, sigma, n_train, n_heldout (examples), rows (R), mse_train,
    mse_heldout, gap, se_train, se_heldout, se_gap (each example's draws averaged first; se over examples;
    se_gap paired by example index when n_train == n_heldout, else sqrt(se_train^2 + se_heldout^2)).
    per_example=True also returns a long table (sigma_index, sigma, set, example, mse, draws), example
    being the index into the set passed in, for paired comparisons across sigma (summarize_gap).
    """
    train, heldout = _as_tensor(train), _as_tensor(heldout)
    if train.shape[1:] != heldout.shape[1:]:
        raise ValueError(f"train examples have shape {tuple(train.shape[1:])}, held-out {tuple(heldout.shape[1:])}")
    if repeats < 1 or n_per_set < 1:
        raise ValueError(f"need n_per_set >= 1 and repeats >= 1, got {n_per_set}, {repeats}")
    sigmas = [float(s) for s in np.asarray(sigmas, dtype=np.float64).reshape(-1)]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError("sigmas must be a non-empty sequence of positive noise levels")
    device = torch.device(device) if device is not None else _infer_device(denoiser, train)
    shape = tuple(train.shape[1:])
    rows = n_per_set * repeats
    sets = []
    for data, labels in ((train, labels_train), (heldout, labels_heldout)):
        idx = subset_indices(data.shape[0], n_per_set, seed)
        y = data[idx.to(data.device)].to(device=device, dtype=dtype)
        lab = None
        if labels is not None:
            labels = _as_tensor(labels)
            lab = labels[idx.to(labels.device)].to(device)
        sets.append((idx, y, lab))
    errors = torch.empty(len(sigmas), 2, rows, dtype=torch.float64, device=device)
    pin = device.type == "cuda" and torch.device(noise_device).type == "cpu"
    with eval_mode(denoiser):
        _fill_errors(errors, denoiser, sets, sigmas, seed, batch_size, shape, noise_device, dtype, pin)
    errors = errors.cpu().numpy()   # the one host sync

    m = np.arange(rows)
    per_ex, stats = [], []
    for s, (idx, _, _) in enumerate(sets):
        n_s = idx.numel()
        draws = np.bincount(m % n_s, minlength=n_s)
        means = np.stack([np.bincount(m % n_s, weights=errors[j, s], minlength=n_s)
                          for j in range(len(sigmas))]) / draws
        per_ex.append((idx.numpy(), means, draws))
        stats.append((means.mean(1), means.std(1, ddof=1) / math.sqrt(n_s) if n_s > 1 else np.zeros(len(sigmas))))
    (mse_t, se_t), (mse_h, se_h) = stats
    if per_ex[0][1].shape == per_ex[1][1].shape and per_ex[0][1].shape[1] > 1:
        diff = per_ex[1][1] - per_ex[0][1]
        se_gap = diff.std(1, ddof=1) / math.sqrt(diff.shape[1])
    else:
        se_gap = np.hypot(se_t, se_h)
    df = pd.DataFrame(dict(
        sigma_index=np.arange(len(sigmas)), sigma=np.array(sigmas), n_train=per_ex[0][1].shape[1],
        n_heldout=per_ex[1][1].shape[1], rows=rows, mse_train=mse_t, mse_heldout=mse_h, gap=mse_h - mse_t,
        se_train=se_t, se_heldout=se_h, se_gap=se_gap,
    ))
    if not per_example:
        return df
    long = pd.concat([pd.DataFrame(dict(
        sigma_index=np.repeat(np.arange(len(sigmas)), len(ids)), sigma=np.repeat(sigmas, len(ids)), set=name,
        example=np.tile(ids, len(sigmas)), mse=means.reshape(-1), draws=np.tile(draws, len(sigmas))))
        for name, (ids, means, draws) in zip(("train", "heldout"), per_ex)], ignore_index=True)
    return df, long


def _fill_errors(errors, denoiser, sets, sigmas, seed, batch_size, shape, noise_device, dtype, pin):
    """errors[j, s, m] = ||D(y + sigma_j n_m; sigma_j) - y||^2 / d for row m of set s, on the device."""
    rows, device = errors.shape[2], errors.device
    for j, sigma in enumerate(sigmas):
        for start in range(0, rows, batch_size):
            stop = min(start + batch_size, rows)
            noise = noise_rows(seed, j, start, stop, shape, device=noise_device, dtype=dtype)
            noise = noise.pin_memory().to(device, non_blocking=True) if pin else noise.to(device)
            row = torch.arange(start, stop, device=device)
            for s, (idx, y_all, lab_all) in enumerate(sets):
                example = row % idx.numel()
                y = y_all[example]
                labels = None if lab_all is None else lab_all[example]
                D = denoiser(y + sigma * noise, sigma, labels)
                errors[j, s, start:stop] = (D.double() - y.double()).square().flatten(1).mean(1)


def gap_curves(denoisers: Mapping[int, object], train, heldout, sigmas, per_example: bool = False, **kwargs):
    """denoising_errors for several checkpoints {step: denoiser}, stacked with a `step` column (and the
    per-example tables likewise when per_example=True). Noise and subsets are the same for every
    checkpoint, so the curves are paired."""
    frames, longs = [], []
    for step, D in denoisers.items():
        out = denoising_errors(D, train, heldout, sigmas, per_example=per_example, **kwargs)
        df, long = out if per_example else (out, None)
        frames.append(df.assign(step=int(step)))
        if per_example:
            longs.append(long.assign(step=int(step)))
    df = _step_first(pd.concat(frames, ignore_index=True))
    return (df, _step_first(pd.concat(longs, ignore_index=True))) if per_example else df


def _step_first(df: pd.DataFrame) -> pd.DataFrame:
    return df[["step"] + [c for c in df.columns if c != "step"]]


def checkpoint_gap_curves(model_path, snapshots: Mapping[int, object], train, heldout, sigmas, device="cpu",
                          per_example: bool = False, **kwargs):
    """gap_curves over a training run's EMA snapshots {step: snapshot path} (models.load_model), one
    model in memory at a time."""
    from ..models import load_model
    outs = []
    for step, snap in snapshots.items():
        D, _ = load_model(model_path, device=device, snapshot=snap)
        outs.append(gap_curves({step: D}, train, heldout, sigmas, device=device, per_example=per_example, **kwargs))
        del D
    if per_example:
        return tuple(pd.concat([o[k] for o in outs], ignore_index=True) for k in (0, 1))
    return pd.concat(outs, ignore_index=True)


def _diff_se(per_example: pd.DataFrame, k: int, e: int) -> float:
    """SE of gap(sigma_k) - gap(sigma_e), each set's examples paired across the two sigmas (the sets are
    treated as independent, which ignores their shared noise: conservative)."""
    var = 0.0
    for _, g in per_example.groupby("set"):
        a = g[g["sigma_index"] == k].set_index("example")["mse"]
        b = g[g["sigma_index"] == e].set_index("example")["mse"]
        d = (a - b.reindex(a.index)).to_numpy()
        var += d.var(ddof=1) / len(d) if len(d) > 1 else 0.0
    return math.sqrt(var)


def _summarize_one(df: pd.DataFrame, per_example: Optional[pd.DataFrame]) -> dict:
    df = df.sort_values("sigma")
    gap = df["gap"].to_numpy()
    k = int(np.argmax(gap))
    ends = (0, len(gap) - 1)
    interior = k not in ends
    if per_example is not None:
        sig_idx = df["sigma_index"].to_numpy()
        se = [_diff_se(per_example, int(sig_idx[k]), int(sig_idx[e])) for e in ends]
    else:  # no pairing across sigma: sum of variances (conservative when examples are shared across sigma)
        se_gap = df["se_gap"].to_numpy() if "se_gap" in df else np.zeros_like(gap)
        se = [math.hypot(se_gap[k], se_gap[e]) for e in ends]
    margin = gap[k] - max(gap[e] for e in ends)
    clear = interior and all(gap[k] - gap[e] > 2 * s for e, s in zip(ends, se))
    return dict(peak_sigma=float(df["sigma"].iloc[k]), peak_gap=float(gap[k]), peak_index=k,
                peak_interior=bool(interior), peak_margin=float(margin), peak_clear=bool(clear),
                gap_min_sigma=float(gap[0]), gap_max_sigma=float(gap[-1]),
                sigma_min=float(df["sigma"].iloc[0]), sigma_max=float(df["sigma"].iloc[-1]), n_sigmas=len(gap))


def summarize_gap(df: pd.DataFrame, per_example: Optional[pd.DataFrame] = None,
                  by: Optional[str] = "step") -> pd.DataFrame:
    """One row per gap curve (per `by` value when that column exists):
      peak_sigma, peak_gap, peak_index   where gap is largest;
      peak_interior   the maximum is not at either end of the sigma grid (claim K2's verdict);
      peak_margin     peak_gap minus the larger of the two end values (0 when the peak is an end);
      peak_clear      interior and above each end value by more than 2 standard errors of the difference
                      (paired over examples when the per-example table of denoising_errors is given,
                      else the conservative sqrt(se_k^2 + se_end^2));
      gap_min_sigma, gap_max_sigma   the gap at the grid ends; sigma_min, sigma_max, n_sigmas."""
    if by is not None and by in df.columns:
        rows = []
        for key, g in df.groupby(by, sort=True):
            pe = None if per_example is None else per_example[per_example[by] == key]
            rows.append({by: key, **_summarize_one(g, pe)})
        return pd.DataFrame(rows)
    return pd.DataFrame([_summarize_one(df, per_example)])


# ---------------------------------------------------------------------------------------------------------
# The measurements of claims K1-K2 and S3 (methods.md section 6), from one gap curve: a table with one row per
# sigma and columns sigma, mse_train, mse_heldout, gap, se_gap (denoising_errors' output, or the aggregated
# metric rows of one checkpoint pivoted back).

INTERMEDIATE_SIGMA = (0.2, 5.0)     # [ours] "intermediate sigma" of claim K1: between the data's pixel scale
                                    # (sigma_data = 0.5 / 2.5) and 10 sigma_data; 4 points of the default grid


def _edm_lambda(sigma, sigma_data: float = 0.5):
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def weighted_gap(curve: pd.DataFrame, kind: str = "relative", sigma_data: float = 0.5):
    """(sigma, weighted gap, its standard error), sorted by sigma. The unweighted gap is 0 at both ends
    of the grid by construction (the network is the identity at small sigma, returns the mean at large
    sigma), so a peak inside the grid says little; weighted curves keep the ends comparable:
      'relative': gap / mse_train (the held-out error's excess as a fraction of the training error);
      'lambda':   lambda(sigma) * gap with EDM's loss weight (the gap as the training loss weighs it)."""
    c = curve.sort_values("sigma")
    sigma = c["sigma"].to_numpy(dtype=np.float64)
    gap, se = c["gap"].to_numpy(dtype=np.float64), c["se_gap"].to_numpy(dtype=np.float64)
    if kind == "relative":
        scale = 1.0 / c["mse_train"].to_numpy(dtype=np.float64)
    elif kind == "lambda":
        scale = _edm_lambda(sigma, sigma_data)
    else:
        raise ValueError(f"kind must be 'relative' or 'lambda', got {kind!r}")
    return sigma, gap * scale, se * scale


def gap_significance(curve: pd.DataFrame) -> float:
    """max over sigma of gap / se_gap: how many standard errors the largest gap stands above 0. [ours] A
    run overfits measurably when this exceeds 3 (a one-sided 3-se excursion at any of 12 noise levels
    happens by chance with probability ~1.6%)."""
    se = curve["se_gap"].to_numpy(dtype=np.float64)
    z = np.where(se > 0, curve["gap"].to_numpy(dtype=np.float64) / np.where(se > 0, se, 1.0), 0.0)
    return float(z.max()) if len(z) else float("nan")


def weighted_gap_peak(curve: pd.DataFrame, kind: str = "relative", z: float = 1.959964) -> dict:
    """Where the weighted gap peaks and whether the peak stands above both grid ends:
    peak_sigma, peak (value), interior (not an end), and for an interior peak margin_lo = min over the
    two ends of (peak - end) - z * sqrt(se_peak^2 + se_end^2): > 0 when the peak stands above both ends
    at the ~95% level (conservative: the examples shared between noise levels are treated as
    independent); nan for a peak at an end."""
    sigma, w, se = weighted_gap(curve, kind)
    k = int(np.argmax(w))
    ends = (0, len(w) - 1)
    margins = [(w[k] - w[e]) - z * math.hypot(se[k], se[e]) for e in ends]
    return dict(peak_sigma=float(sigma[k]), peak=float(w[k]), interior=bool(k not in ends),
                margin_lo=float(min(margins)) if k not in ends else float("nan"))


def intermediate_gap(curve: pd.DataFrame, band=INTERMEDIATE_SIGMA) -> float:
    """Mean unweighted gap over the grid points with band[0] <= sigma <= band[1] (claim K1: the denoiser's
    overfitting where noisy training inputs still identify their image)."""
    m = curve[(curve["sigma"] >= band[0]) & (curve["sigma"] <= band[1])]
    if m.empty:
        raise ValueError(f"no grid point in {band}")
    return float(m["gap"].mean())


def heldout_loss(curve: pd.DataFrame, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5,
                 column: str = "mse_heldout") -> float:
    """EDM's training objective evaluated on held-out data, per dimension: sum_j w_j lambda(sigma_j)
    mse(sigma_j), w_j the log-normal density of ln sigma at the grid points normalized to 1 (the grid is
    uniform in ln sigma). Rising over training = the model gets worse on data it has not seen (claim S3)."""
    c = curve.sort_values("sigma")
    sigma = c["sigma"].to_numpy(dtype=np.float64)
    w = np.exp(-0.5 * ((np.log(sigma) - P_mean) / P_std) ** 2)
    w = w / w.sum()
    return float((w * _edm_lambda(sigma, sigma_data) * c[column].to_numpy(dtype=np.float64)).sum())


def plot_gap(df: pd.DataFrame, path, title: Optional[str] = None):
    """Left: gap(sigma) per checkpoint (log sigma, +-1 se band), colour = step. Right: heat map step x sigma."""
    from matplotlib import colors

    from ..plots import plt

    from ..io import atomic_savefig

    if "step" not in df.columns:
        df = df.assign(step=0)
    steps = sorted(df["step"].unique())
    cmap = plt.get_cmap("viridis")
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120, gridspec_kw=dict(width_ratios=(1.1, 1)))
    for i, step in enumerate(steps):
        g = df[df["step"] == step].sort_values("sigma")
        c = cmap(i / max(len(steps) - 1, 1))
        ax.plot(g["sigma"], g["gap"], "-o", ms=3, color=c, label=f"step {step}")
        if "se_gap" in g:
            ax.fill_between(g["sigma"], g["gap"] - g["se_gap"], g["gap"] + g["se_gap"], color=c, alpha=0.2, lw=0)
        k = int(np.argmax(g["gap"].to_numpy()))
        ax.plot(g["sigma"].iloc[k], g["gap"].iloc[k], "*", ms=9, color=c, mec="k", mew=0.5)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(r"$\sigma$")
    ax.set_ylabel("held-out MSE - train MSE (per dim)")
    ax.set_title(title or "generalization gap per noise level", fontsize=9)
    if len(steps) <= 12:
        ax.legend(fontsize=7)

    table = df.pivot_table(index="step", columns="sigma", values="gap").sort_index()
    sig = table.columns.to_numpy(dtype=np.float64)
    edges = np.exp(np.concatenate([[np.log(sig[0]) - 0.5 * _dlog(sig)], 0.5 * (np.log(sig[1:]) + np.log(sig[:-1])),
                                   [np.log(sig[-1]) + 0.5 * _dlog(sig)]]))
    vals = table.to_numpy()
    lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
    mesh = hx.pcolormesh(edges, np.arange(len(table.index) + 1), vals, cmap="RdBu_r",
                         norm=colors.TwoSlopeNorm(0.0, -lim or -1.0, lim or 1.0), shading="flat")
    hx.set_xscale("log")
    hx.set_yticks(np.arange(len(table.index)) + 0.5)
    hx.set_yticklabels([str(s) for s in table.index], fontsize=7)
    hx.set_xlabel(r"$\sigma$")
    hx.set_ylabel("training step")
    hx.set_title("gap (step x sigma)", fontsize=9)
    fig.colorbar(mesh, ax=hx)
    fig.tight_layout()
    atomic_savefig(path, fig)
    plt.close(fig)


def _dlog(sig: np.ndarray) -> float:
    return float(np.diff(np.log(sig)).mean()) if len(sig) > 1 else 1.0
