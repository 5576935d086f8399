"""Figure: how InfoNoise's estimated profile and sampling density moved during training.

Three panels over ln(sigma), one curve per snapshot coloured by training step:
  (a) the max-normalised sigma-coordinate profile r/max(r), r = mmse/sigma^3 (log scale), on which the
      onset rule reads the gate threshold p, with each gate c;
  (b) the target allocation rho = q*g / integral(q*g);
  (c) the sampling density pi next to the prior (EDM's log-normal, dashed).
"""
from __future__ import annotations

import numpy as np
import torch

from diffrepro.io import atomic_savefig
from diffrepro.plots import plt
from diffrepro.sigma_dist import LogNormal, SigmaDistribution

__all__ = ["plot_profile"]


def _select(snapshots: list, max_curves: int) -> list:
    snaps = [s for s in snapshots if np.isfinite(np.asarray(s["q"])).all()]
    snaps.sort(key=lambda s: int(s["step"]))
    if len(snaps) > max_curves:
        keep = np.unique(np.linspace(0, len(snaps) - 1, max_curves).round().astype(int))
        snaps = [snaps[i] for i in keep]
    return snaps


def plot_profile(snapshots, path, prior: SigmaDistribution = LogNormal(), max_curves: int = 12,
                 title: str | None = None):
    """`snapshots`: a list of `InfoNoise.profile_snapshot()` / `InfoNoise.history()` dicts (or one
    dict, or an InfoNoise object, whose history is used). Snapshots taken before the first refresh
    (NaN profile) are skipped. Writes the figure atomically to `path`."""
    if hasattr(snapshots, "history"):
        snapshots = snapshots.history()
    if isinstance(snapshots, dict):
        snapshots = [snapshots]
    snaps = _select(list(snapshots), max_curves)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=120, layout="constrained")
    ax_q, ax_rho, ax_pi = axes
    if snaps:
        steps = np.array([int(s["step"]) for s in snaps])
        norm = plt.Normalize(steps.min(), max(steps.max(), steps.min() + 1))
        cmap = plt.get_cmap("viridis")
        for s in snaps:
            u, color = np.asarray(s["ln_sigma"]), cmap(norm(int(s["step"])))
            r = np.asarray(s["mmse"]) / np.exp(3 * u)        # the sigma-coordinate profile the gate rule reads
            ax_q.plot(u, r / r.max(), color=color, lw=1.2)
            c = float(s.get("gate_sigma", np.nan))
            if c > 0:
                ax_q.axvline(np.log(c), color=color, lw=0.8, ls=":")
            ax_rho.plot(u, s["rho"], color=color, lw=1.2)
            ax_pi.step(u, s["pi"], where="mid", color=color, lw=1.2)
        p = float(snaps[-1].get("gate_threshold", np.nan))
        if np.isfinite(p):
            ax_q.axhline(p, color="0.4", lw=0.8, ls="--", label=f"gate threshold p = {p:g}")
            ax_q.legend(fontsize=7, loc="lower left")
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=axes, label="training step", fraction=0.02, pad=0.01)
        u = np.asarray(snaps[-1]["ln_sigma"])
        lo, hi = u[0] - (u[1] - u[0]) / 2, u[-1] + (u[1] - u[0]) / 2
    else:
        lo, hi = np.log(0.002), np.log(80.0)
    grid = np.linspace(lo - 1.0, hi + 1.0, 1000)
    prior_density = prior.log_density(torch.as_tensor(np.exp(grid))).exp().numpy()
    ax_pi.plot(grid, prior_density, color="k", ls="--", lw=1.2, label=f"prior ({prior.name})")
    ax_pi.legend(fontsize=7, loc="upper right")
    ax_q.set_yscale("log")
    ax_q.set_ylim(bottom=1e-8)
    ax_q.set_title("r/max r, r = mmse/$\\sigma^3$ (dotted: gate c)", fontsize=9)
    ax_rho.set_title("target allocation $\\rho$ (density over ln $\\sigma$)", fontsize=9)
    ax_pi.set_title("sampling density $\\pi$ over ln $\\sigma$", fontsize=9)
    for ax in axes:
        ax.set_xlabel("ln $\\sigma$")
        ax.set_xlim(lo - 0.5, hi + 0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    atomic_savefig(path, fig)
    plt.close(fig)
