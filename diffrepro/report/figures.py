"""Figures of the report, drawn from the tidy metrics table."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_savefig  # noqa: E402
from .claims import primary  # noqa: E402


def _run_label(g: pd.DataFrame, with_data=True) -> str:
    """`fmnist N=500 edm small-gpu s0` for the rows of one run (integer columns may arrive as floats)."""
    first = g.iloc[0]
    training = f" {first['training']}" if isinstance(first.get("training"), str) else ""
    label = f"{first['method']}{training} s{int(first['seed'])}"
    return f"{first['dataset']} N={int(first['n_train'])} {label}" if with_data else label


def _style(i: int) -> dict:
    """Colour and line style of the i-th line: ten colours, then the same colours dashed, then dotted."""
    return {"color": f"C{i % 10}", "ls": ("-", "--", ":")[(i // 10) % 3]}


def _save(fig, path):
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=120)
    plt.close(fig)


def _panels(d: pd.DataFrame, width: float):
    """One axes per (dataset, N) in `d`, side by side: (figure, [(axes, (dataset, N), rows)])."""
    groups = list(d.groupby(["dataset", "n_train"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(width * len(groups), 3.4), squeeze=False)
    return fig, list(zip(axes[0], groups))


def loss_curves(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "train_loss"]
    if d.empty:
        return False
    fig, panels = _panels(d, 4.5)
    for ax, ((ds, n), g) in panels:
        for run, r in g.groupby("run"):
            label = _run_label(r, with_data=False)
            ax.plot(r["step"], r["value"], label=label, lw=1.2)
        ax.set(title=f"{ds}, N={n}", xlabel="step", ylabel="training loss (weighted)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def sigma_profile(df: pd.DataFrame, path) -> bool:
    """Final per-sigma-bin unweighted MSE (denoising error vs noise level) per run."""
    d = df[(df["metric"] == "bin_mse") & df["sigma"].notna()]
    if d.empty:
        return False
    last = d[d["step"] == d.groupby("run")["step"].transform("max")]
    fig, panels = _panels(last, 4.5)
    for ax, ((ds, n), g) in panels:
        for run, r in g.groupby("run"):
            r = r.sort_values("sigma")
            ax.plot(r["sigma"], r["value"], marker="o", ms=3, lw=1, label=_run_label(r, with_data=False))
        ax.set(xscale="log", yscale="log", title=f"{ds}, N={n}", xlabel="sigma", ylabel="MSE per dim (last log window)")
        ax.legend(fontsize=7)
    _save(fig, path)
    return True


def memorization_vs_n(df: pd.DataFrame, path) -> bool:
    d = primary(df[df["metric"] == "mem_fraction_memorized"])  # a sampler sweep is not extra seeds
    if d.empty or d["n_train"].nunique() < 2:
        return False
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, ((ds, method, training), g) in enumerate(d.groupby(["dataset", "method", "training"])):
        st = g.groupby("n_train")["value"].agg(["mean", "std"]).reset_index()
        ax.errorbar(st["n_train"], st["mean"], yerr=st["std"].fillna(0), marker="o", capsize=3,
                    label=f"{ds} {method} {training}", **_style(i))
    ax.set(xscale="log", xlabel="training set size N", ylabel="fraction memorized (d1/d2 < 1/3)")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def fid_vs_nfe(df: pd.DataFrame, path) -> bool:
    d = df[(df["metric"] == "fid") & df["nfe"].notna()]
    d = d[d.groupby("run")["nfe"].transform("nunique") > 1]      # models sampled at several NFE only
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for (run, sampler), g in d.groupby(["run", "sampler"]):
        g = g.sort_values("nfe")
        ax.plot(g["nfe"], g["value"], marker="o", label=f"{g['method'].iloc[0]} {sampler}")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="FID")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def infonoise_profile(df: pd.DataFrame, path) -> bool:
    """Last InfoNoise profile and sampling density per run, next to EDM's log-normal."""
    d = df[df["metric"].isin(["infonoise_pi", "infonoise_rho"])]
    if d.empty:
        return False
    import numpy as np

    from ..sigma_dist import LogNormal

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for run, g in d.groupby("run"):
        last = g[g["step"] == g["step"].max()]
        label = f"{g['dataset'].iloc[0]} {g['method'].iloc[0]} (step {int(last['step'].iloc[0])})"
        for ax, metric in zip(axes, ("infonoise_rho", "infonoise_pi")):
            r = last[last["metric"] == metric].sort_values("sigma")
            ax.plot(r["sigma"], r["value"], label=label)
    grid = np.exp(np.linspace(np.log(0.002), np.log(80), 400))
    import torch
    axes[1].plot(grid, LogNormal().log_density(torch.tensor(grid)).exp().numpy(), "k--", label="EDM log-normal")
    axes[0].set(xscale="log", xlabel="sigma", ylabel="target allocation rho (per ln sigma)",
                title="estimated entropy-rate allocation")
    axes[1].set(xscale="log", xlabel="sigma", ylabel="density of ln sigma", title="training sigma density")
    axes[1].legend(fontsize=7)
    _save(fig, path)
    return True


def stf_target_variance(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "stf_target_trace"]
    if d.empty:
        return False
    n = d["n_train"].max()
    d = d[d["n_train"] == n]
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for r, g in d.groupby("ref_batch"):
        g = g.sort_values("sigma")
        ax.plot(g["sigma"], g["value"], marker="o", ms=3, ls="--" if r == 1 else "-",
                label="baseline (target y)" if r == 1 else f"STF |R|={int(r)}")
    ax.set(xscale="log", xlabel="sigma", ylabel="(1/D) E tr Cov[target | x]",
           title=f"{d['dataset'].iloc[0]}, N={n}")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def gap_curves(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "gap"]
    if d.empty:
        return False
    fig, panels = _panels(d, 4.8)
    for ax, ((ds, n), g) in panels:
        for run, r in g.groupby("run"):
            for step, rs in r.groupby("step"):
                rs = rs.sort_values("sigma")
                last = step == r["step"].max()
                ax.plot(rs["sigma"], rs["value"], lw=1.6 if last else 0.8, alpha=1 if last else 0.5,
                        label=f"{_run_label(r, with_data=False)} step {step}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xscale="log", xlabel="sigma", ylabel="held-out minus training MSE per dim", title=f"{ds}, N={n}")
        ax.legend(fontsize=6)
    _save(fig, path)
    return True


def _over_steps(df: pd.DataFrame, metric: str, path, ylabel, **axes) -> bool:
    """One line per run: a per-checkpoint metric against the training step."""
    d = df[df["metric"] == metric]
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(7.6, 3.8))
    for i, (run, g) in enumerate(d.groupby("run")):
        g = g.sort_values("step")
        ax.plot(g["step"], g["value"], marker="o", ms=3, label=_run_label(g), **_style(i))
    ax.set(xlabel="training step", ylabel=ylabel(d) if callable(ylabel) else ylabel, **axes)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)
    return True


def fid_vs_steps(df: pd.DataFrame, path) -> bool:
    return _over_steps(df, "fid_ckpt", path, lambda d: f"FID ({int(d['num_samples'].max())} samples)", yscale="log")


def memorization_vs_steps(df: pd.DataFrame, path) -> bool:
    return _over_steps(df, "mem_fraction_ckpt", path, "fraction memorized (d1/d2 < 1/3)")


def trajectory_distances(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"].isin(["traj_r_traj", "traj_r_train"])]
    if d.empty:
        return False
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for (run, metric), g in d.groupby(["run", "metric"]):
        g = g.sort_values("sigma")
        ax.plot(g["sigma"], g["value"], ls="-" if metric == "traj_r_traj" else "--",
                label=f"{g['method'].iloc[0]} N={g['n_train'].iloc[0]}: "
                      + ("trajectory" if metric == "traj_r_traj" else "noised training"))
    ax.set(xscale="log", yscale="log", xlabel="sigma",
           ylabel="nearest training point / (sigma sqrt(d)), median")
    ax.legend(fontsize=6)
    _save(fig, path)
    return True


FIGURES = {
    "loss_curves.png": (loss_curves, "Training loss per run (EDM-weighted, mean over each logging window)."),
    "sigma_profile.png": (sigma_profile, "Unweighted denoising MSE per noise level at the end of training."),
    "memorization_vs_n.png": (memorization_vs_n, "Fraction of samples memorized versus training set size."),
    "fid_vs_nfe.png": (fid_vs_nfe, "FID versus number of function evaluations."),
    "gap_curves.png": (gap_curves, "Generalization gap per noise level (held-out minus training denoising MSE, "
                                   "same noise draws) at each analysed checkpoint; thick: last."),
    "memorization_vs_steps.png": (memorization_vs_steps, "Memorization over training (samples from each checkpoint)."),
    "fid_vs_steps.png": (fid_vs_steps, "FID over training: samples from each analysed checkpoint (comparable only "
                                       "among themselves: fewer samples than the final FID)."),
    "trajectory_distances.png": (trajectory_distances, "Distance to the nearest training point relative to "
                                                       "sigma*sqrt(d): sampler trajectories vs noised training points."),
    "infonoise_profile.png": (infonoise_profile, "InfoNoise: estimated allocation and training sigma density "
                                                 "at the end of training, next to EDM's log-normal."),
    "stf_target_variance.png": (stf_target_variance, "Trace of the training target's covariance versus sigma: "
                                                     "baseline target vs Stable Target Field (real data)."),
}
