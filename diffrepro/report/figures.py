"""Figures of the report, drawn from the tidy metrics table: one panel per claim or comparison, at most six
arms per panel, each arm a distinct colour and marker, seeds as a shaded 95% band around their mean
(diffrepro.plots), log axes where values span decades."""
from __future__ import annotations

import math
from typing import Callable, List, Tuple

import numpy as np
import pandas as pd

from ..plots import MAX_LINES, groups, log_if_spans, panels, plt, save, seed_band
from .claims import _baseline, _gap_curves, budget_of, primary

# The comparisons of the claims table: which runs share a panel (besides the EDM baseline).
COMPARISONS: List[Tuple[str, Callable[[pd.DataFrame], pd.Series]]] = [
    ("EDM vs VP vs VE (E2)", lambda d: d["precond"].isin(["vp", "ve"]) & (d["mask_ratio"].fillna(0) == 0)),
    ("masking (S1)", lambda d: (d["mask_ratio"].fillna(0) > 0) & (d["target"].fillna("none") == "none")
     & (d["sigma_dist"].fillna("lognormal") == "lognormal")),
    ("InfoNoise (I1)", lambda d: (d["sigma_dist"] == "infonoise") & (d["mask_ratio"].fillna(0) == 0)
     & (d["target"].fillna("none") == "none")),
    ("STF (T2)", lambda d: (d["target"] == "stf") & (d["mask_ratio"].fillna(0) == 0)
     & (d["sigma_dist"].fillna("lognormal") == "lognormal")),
]


def fid_modes(d: pd.DataFrame) -> pd.Series:
    """The FID mode of each row (clean or legacy_tensorflow); rows from before FID had modes were clean."""
    mode = d["fid_mode"].astype(object) if "fid_mode" in d.columns else pd.Series(None, index=d.index, dtype=object)
    return mode.where(mode.notna(), "clean").astype(str)


def fid_label(d: pd.DataFrame) -> str:
    """An FID axis label naming the mode(s) and the sample count of the rows plotted."""
    return f"FID, {' / '.join(sorted(fid_modes(d).unique()))} ({int(d['num_samples'].max())} samples)"


def _arm_label(g: pd.DataFrame) -> str:
    f = g.iloc[0]
    label = str(f["method"])
    if isinstance(f.get("network"), str):
        label += f" ({f['network']})"
    return label


def _bands(ax, d: pd.DataFrame, x: str, arm_cols: List[str], label=_arm_label, value: str = "value", **kw) -> list:
    """Seed bands of `value` against `x`, one per arm (rows grouped by arm_cols; the seeds are the runs)."""
    values = []
    arms = sorted(d.groupby(arm_cols, dropna=False), key=lambda kv: str(kv[0]))[:MAX_LINES]
    for i, (_, g) in enumerate(arms):
        per = g.groupby([x, "run"])[value].mean().reset_index()
        xs = sorted(per[x].unique())
        seed_band(ax, xs, [per[per[x] == v][value].tolist() for v in xs], label(g), i, **kw)
        values += per[value].tolist()
    return values


def _split(todo, arm_cols: List[str]):
    """Panels with more than MAX_LINES arms become several panels of at most MAX_LINES arms each."""
    out = []
    for title, g in todo:
        keys = sorted(g.groupby(arm_cols, dropna=False).groups, key=str)
        if len(keys) <= MAX_LINES:
            out.append((title, g))
            continue
        chunks = groups(keys)
        idx = g.set_index(arm_cols).index
        for k, chunk in enumerate(chunks):
            out.append((f"{title} ({k + 1}/{len(chunks)})", g[idx.isin(chunk)]))
    return out


def _comparison_panels(d: pd.DataFrame):
    """[(title, rows)] for each comparison with >= 2 arms in one (dataset, N, training) setting."""
    out = []
    for (ds, n, tr), g in d.groupby(["dataset", "n_train", "training"]):
        base = g[_baseline(g)]
        for name, pick in COMPARISONS:
            other = g[pick(g)]
            if len(other) and len(base):
                out.append((f"{name}: {ds} N={int(n)}, {tr}", pd.concat([base, other])))
    return out


ARM = ["method", "network", "training"]


def fid_vs_steps(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "fid_ckpt"]
    todo = _split(_comparison_panels(d), ARM)
    if not todo:
        return False
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        vals = _bands(ax, g, "step", ARM)
        log_if_spans(ax, vals, decades=0.5)
        ax.set(title=title, xlabel="training step", ylabel=fid_label(g))
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def loss_curves(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "train_loss"]
    todo = _split(_comparison_panels(d), ARM)
    if not todo:
        return False
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        _bands(ax, g, "step", ARM)
        ax.set_yscale("log")
        ax.set(title=title, xlabel="training step", ylabel="training loss (weighted, per window)")
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def pilot_curve(df: pd.DataFrame, path) -> bool:
    from .claims import PILOT_TRAINING
    d = df[(df["training"] == PILOT_TRAINING) & (df["metric"] == "fid_ckpt")]
    if d.empty:
        return False
    budget = budget_of(df)
    t = df[(df["run"].isin(d["run"])) & (df["metric"] == "train_loss") & (df["step"] > 0)]
    batch = float((t["nimg"] / t["step"]).median()) if len(t) else 1.0
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (run, g) in enumerate(d.groupby("run")):
        g = g.groupby("step")["value"].mean()
        ax.plot(g.index * batch / 1e6, g.to_numpy(), marker="o", ms=3, label="pilot (EDM, full set)")
    if budget.T_img:
        ax.axvline(budget.T_img / 1e6, color="k", ls="--", lw=1, label=f"T = {budget.T_img / 1e6:.3g} Mimg")
    log_if_spans(ax, d["value"], decades=0.5)
    ax.set(xlabel="training images (millions)", ylabel=fid_label(d),
           title="pilot: the budget T (FID moves < 5% over the last quarter)")
    ax.legend(fontsize=7)
    save(fig, path)
    return True


def memorization_vs_n(df: pd.DataFrame, path) -> bool:
    d = primary(df[df["metric"] == "mem_fraction_memorized"])
    if d.empty or d["n_train"].nunique() < 2:
        return False
    d = d.assign(eta=d["mask_ratio"].fillna(0))
    todo = _split([("memorization vs N (G1)", d)], ARM)
    fig, axes = panels(len(todo), width=5.2, height=3.6)
    for ax, (title, g) in zip(axes, todo):
        _bands(ax, g, "n_train", ARM, label=lambda r: f"{r.iloc[0]['method']}, {r.iloc[0]['training']}")
        ax.set(xscale="log", xlabel="training set size N", ylabel="fraction memorized (d1/d2 < 1/3)", title=title)
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def memorization_vs_steps(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "mem_fraction_ckpt"]
    if d.empty:
        return False
    d = d.assign(eta=d["mask_ratio"].fillna(0))
    todo = _split([(f"{ds} N={int(n)}", g) for (ds, n), g in d.groupby(["dataset", "n_train"])], ARM)
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        _bands(ax, g, "step", ARM)
        ax.set(title=f"memorized fraction (S2, K1): {title}", xlabel="training step",
               ylabel="fraction memorized", ylim=(-0.03, 1.03))
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def gap_curves(df: pd.DataFrame, path) -> bool:
    """Relative gap (gap / training MSE) against sigma at each run's last analysed checkpoint (K2)."""
    gaps = _gap_curves(df)
    if gaps.empty:
        return False
    last = gaps[gaps["step"] == gaps.groupby("run")["step"].transform("max")].copy()
    last["relative_gap"] = last["gap"] / last["mse_train"]
    last["eta"] = last["mask_ratio"].fillna(0)
    todo = _split([(f"{ds} N={int(n)}", g) for (ds, n), g in last.groupby(["dataset", "n_train"])],
                  ["method", "network", "training"])
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        _bands(ax, g, "sigma", ["method", "network", "training"], value="relative_gap")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xscale="log", title=f"gap per noise level (K2): {title}", xlabel="sigma",
               ylabel="(held-out - train MSE) / train MSE")
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def gap_over_steps(df: pd.DataFrame, path) -> bool:
    """K1: mean gap over 0.2 <= sigma <= 5 against the training step, per width."""
    from ..metrics.generalization import INTERMEDIATE_SIGMA
    gaps = _gap_curves(df)
    if gaps.empty or gaps["step"].nunique() < 2:
        return False
    mid = gaps[gaps["sigma"].between(*INTERMEDIATE_SIGMA) & _baseline(gaps)]
    if mid.empty:
        return False
    mid = mid.groupby(["run", "step"]).agg(value=("gap", "mean"), **{c: (c, "first") for c in
                                                                      ["dataset", "n_train", "network", "training", "method"]})
    mid = mid.reset_index()
    todo = _split([(f"{ds} N={int(n)}", g) for (ds, n), g in mid.groupby(["dataset", "n_train"])],
                  ["network", "training"])
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        _bands(ax, g, "step", ["network", "training"],
               label=lambda r: f"{r.iloc[0]['network']} U-Net, {r.iloc[0]['training']}")
        ax.set(title=f"denoiser overfitting (K1): {title}", xlabel="training step",
               ylabel="held-out - train MSE, 0.2 <= sigma <= 5")
        ax.legend(fontsize=7)
    save(fig, path)
    return True


def fid_vs_nfe(df: pd.DataFrame, path) -> bool:
    """E1: FID against NFE per sampler (seed bands over models), the Heun-256 reference as a 2% band; the
    per-sample RMSE to the reference beside it when measured."""
    d = df[(df["metric"] == "fid") & df["nfe"].notna() & df["sampler"].isin(["heun", "euler"])]
    d = d[d.groupby("run")["nfe"].transform("nunique") > 2]
    if d.empty:
        return False
    ref = d[(d["sampler"] == "heun") & (d["num_steps"] >= 256)]
    d = d.drop(ref.index)
    rmse = df[df["metric"] == "rmse_to_reference"]
    fig, axes = panels(2 if len(rmse) else 1, cols=2)
    ax = axes[0]
    vals = _bands(ax, d, "nfe", ["sampler"], label=lambda g: f"{g.iloc[0]['sampler']}")
    if len(ref):
        r = ref["value"].mean()
        ax.axhspan(0.98 * r, 1.02 * r, color="0.5", alpha=0.25, lw=0, label=f"Heun-256 reference +-2% ({r:.3g})")
    log_if_spans(ax, vals, decades=0.3)
    ax.set(xscale="log", xlabel="NFE", ylabel=fid_label(d), title="sampler sweep (E1)")
    ax.legend(fontsize=7)
    if len(rmse):
        _bands(axes[1], rmse, "nfe", ["sampler"], label=lambda g: f"{g.iloc[0]['sampler']}")
        axes[1].set(xscale="log", yscale="log", xlabel="NFE", ylabel="per-sample RMSE to the reference",
                    title="truncation error (E1)")
        axes[1].legend(fontsize=7)
    save(fig, path)
    return True


def infonoise_profile(df: pd.DataFrame, path) -> bool:
    """The last InfoNoise sampling density (seed band over runs) next to EDM's log-normal."""
    d = df[df["metric"] == "infonoise_pi"]
    if d.empty:
        return False
    import torch

    from ..sigma_dist import LogNormal
    last = d[d["step"] == d.groupby("run")["step"].transform("max")]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    _bands(ax, last, "sigma", ["dataset", "n_train", "training"],
           label=lambda g: f"InfoNoise, {g.iloc[0]['dataset']} N={int(g.iloc[0]['n_train'])}", marker=None)
    grid = np.exp(np.linspace(math.log(0.002), math.log(80), 400))
    ax.plot(grid, LogNormal().log_density(torch.tensor(grid)).exp().numpy(), "k--", label="EDM log-normal")
    ax.set(xscale="log", xlabel="sigma", ylabel="density of ln sigma", title="training sigma density (I1)")
    ax.legend(fontsize=7)
    save(fig, path)
    return True


def stf_target_variance(df: pd.DataFrame, path) -> bool:
    d = df[df["metric"] == "stf_trace_ratio"]
    d = d[d["ref_batch"] > 1]
    if d.empty:
        return False
    n = d["n_train"].max()                  # the largest subset, of one dataset (the first by name)
    ds = sorted(d.loc[d["n_train"] == n, "dataset"].unique())[0]
    d = d[(d["n_train"] == n) & (d["dataset"] == ds)]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    se = df[(df["metric"] == "stf_trace_ratio_se") & (df["n_train"] == n) & (df["dataset"] == ds)]
    from ..plots import band
    for i, (r, g) in enumerate(sorted(d.groupby("ref_batch"))[:MAX_LINES]):
        g = g.sort_values("sigma")
        s = se[se["ref_batch"] == r].set_index("sigma")["value"].reindex(g["sigma"]).to_numpy()
        lo = hi = None
        if np.isfinite(s).any():
            lo, hi = g["value"].to_numpy() - 1.96 * s, g["value"].to_numpy() + 1.96 * s
        band(ax, g["sigma"], g["value"], lo, hi, label=f"|R| = {int(r)}", i=i)
    ax.axhline(1, color="k", lw=0.5)
    ax.axvspan(0.5, 5, color="0.9", zorder=0, label="intermediate sigma")
    ax.set(xscale="log", xlabel="sigma", ylabel="STF / baseline trace of Cov[target | x]",
           title=f"target variance (T1): {d['dataset'].iloc[0]}, N={int(n)}")
    ax.legend(fontsize=7)
    save(fig, path)
    return True


def trajectory_concentration(df: pd.DataFrame, path) -> bool:
    """K3: the ideal denoiser's posterior concentration on trajectory vs noised training points."""
    d = df[df["metric"].isin(["traj_w_max_traj", "traj_w_max_train"])]
    if d.empty:
        return False
    todo = [(f"{ds} N={int(n)}", g) for (ds, n), g in d.groupby(["dataset", "n_train"])]
    fig, axes = panels(len(todo))
    for ax, (title, g) in zip(axes, todo):
        g = g.assign(where=g["metric"].str.replace("traj_w_max_", "", regex=False))
        arms = [a for a, _ in g.groupby(["network", "training"])][:MAX_LINES // 2]
        g = g[g.set_index(["network", "training"]).index.isin(arms)]
        _bands(ax, g, "sigma", ["network", "training", "where"],
               label=lambda r: f"{r.iloc[0]['network']}: {'trajectories' if r.iloc[0]['where'] == 'traj' else 'noised training data'}")
        ax.set(xscale="log", xlabel="sigma", ylabel="max posterior weight of D* (median)",
               title=f"trajectories vs noised data (K3): {title}", ylim=(0, 1.03))
        ax.legend(fontsize=7)
    save(fig, path)
    return True


FIGURES = {
    "pilot_curve.png": (pilot_curve, "The pilot run's FID over training and the budget T it fixes."),
    "fid_vs_steps.png": (fid_vs_steps, "FID over training, one panel per comparison: mean over seeds, shaded 95% "
                                       "t interval (curves use fewer samples than the final FID)."),
    "fid_vs_nfe.png": (fid_vs_nfe, "E1: FID against NFE per sampler, against the Heun-256 reference."),
    "memorization_vs_n.png": (memorization_vs_n, "G1: fraction of samples memorized versus training set size."),
    "memorization_vs_steps.png": (memorization_vs_steps, "Memorization of samples from each analysed checkpoint."),
    "gap_over_steps.png": (gap_over_steps, "K1: the denoiser's held-out minus training error at intermediate "
                                           "sigma over training, per width."),
    "gap_curves.png": (gap_curves, "K2: relative generalization gap per noise level at the last analysed "
                                   "checkpoint (same noise draws for both sets)."),
    "trajectory_concentration.png": (trajectory_concentration, "K3: how concentrated the ideal denoiser's "
                                                               "posterior is on trajectory points vs on noised "
                                                               "training points."),
    "stf_target_variance.png": (stf_target_variance, "T1: trace of the training target's covariance, STF over "
                                                     "the baseline target, versus sigma."),
    "infonoise_profile.png": (infonoise_profile, "InfoNoise's sampling density at the end of training next to "
                                                 "EDM's log-normal."),
    "loss_curves.png": (loss_curves, "Training loss per comparison (mean over seeds, 95% band)."),
}
