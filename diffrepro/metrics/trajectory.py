"""Sampler-trajectory analysis (Kaiser & Kollmann 2026; methods.md section 5 (b), claim K3): do inference
trajectories pass through the region covered by noised training data, and how far is the model from the
ideal denoiser D* of the training set there, compared with on noised training data itself?

Convention (samplers.py). `generate(..., return_trajectory=True)` records, for steps i = 0..N-1, the point
x_i at which the sampler first evaluates the denoiser in step i (the stochastic sampler's x_hat_i, after
churn), its noise level sigma_i (t_hat_i; with EDM's sigma(t) = t, s(t) = 1, x_i lives on the same scale
as a training input y + sigma_i n) and D_theta(x_i; sigma_i). Heun's second (corrector) evaluation is not
recorded. The final sample x_N (sigma = 0) is left out of the per-step statistics and scored separately
(Gu et al.'s nearest-neighbour ratio, on the float values).

Per step i, with d values per example and Y = {y_j} the training set:

    r_traj  = min_j ||x_i - y_j|| / (sigma_i sqrt(d))              on the n sampler trajectories
    r_train = min_j ||x - y_j|| / (sigma_i sqrt(d)),  x = y_k + sigma_i n   on noised training points
    e_traj  = ||D_theta(x_i; sigma_i) - D*(x_i; sigma_i)||^2 / d          on trajectory points
    e_train = ||D_theta(x; sigma_i)   - D*(x; sigma_i)||^2 / d            on the noised training points
    r_overlap = fraction of trajectory points with r_traj inside r_train's central 5%-95% range
    w_max, n_eff = posterior concentration of the ideal denoiser at x (posterior_concentration): the
              largest posterior weight w_j = softmax_j(-||x - y_j||^2 / (2 sigma_i^2)) and the effective
              number of training points 1 / sum_j w_j^2, on trajectory points and on noised training
              points (claim K3: trajectories stay away from noisy training data where the posterior of a
              noised training point still singles out its own image). At sigma far below the spacing
              of the training points every point's posterior sits on its nearest training point
              (w_max -> 1 for trajectories and noised data alike): the measure separates the two only
              at intermediate sigma, where claim K3 reads it (the gap's peak)

r_train is sqrt(chi2_d / d) when y_k is its own nearest training point (mean sqrt(2/d) G((d+1)/2) / G(d/2),
about 1 - 1/(4d); 0.886 for d = 2), a little less when another training point is nearer (large sigma).
For the ideal denoiser the probability-flow ODE transports the noised-data marginals exactly, so x_i is
distributed like a noised training point and r_traj matches r_train up to discretization error.

The noised training points use a seeded subset of Y (the same rule as generalization.subset_indices,
cycled when more points than training examples are asked for) and noise drawn from one generator per
(seed, i) on `noise_device` (default CPU), so they are identical across calls and models. D*
(IdealDenoiser: float64 softmax over Y) is evaluated on inputs in the trajectory's dtype and its output
rounded to that dtype, exactly as the sampler calls a denoiser, so the ideal denoiser used as the model
gives e_traj == 0 exactly. Nearest distances are float64 (nearest_train_distance); the final samples'
memorization scores use memorization.nearest_neighbours (certified exact).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..ideal import IdealDenoiser
from ..seeding import derive_seed
from .generalization import _as_tensor, _infer_device, eval_mode, subset_indices
from .memorization import MemorizationScores, memorization_scores

__all__ = ["TrajectoryAnalysis", "trajectory_statistics", "nearest_train_distance", "nearest_train_ratio",
           "posterior_concentration",
           "noised_training_points", "step_table", "chi_mean", "plot_trajectory"]

QUANTILES = (0.05, 0.25, 0.75, 0.95)


def chi_mean(d: int) -> float:
    """E sqrt(chi2_d / d): the expected r of a noised point whose nearest training point is its own."""
    return math.sqrt(2.0 / d) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


@dataclass
class TrajectoryAnalysis:
    steps: pd.DataFrame                 # one row per sampler step (see step_table)
    sigmas: np.ndarray                  # (N,) sigma_i
    r_traj: np.ndarray                  # (N, B)
    r_train: np.ndarray                 # (N, M)
    e_traj: np.ndarray                  # (N, B)
    e_train: np.ndarray                 # (N, M)
    nearest_traj: np.ndarray            # (N, B) index of the nearest training point of x_i
    train_index: np.ndarray             # (M,) training example behind each noised training point
    samples: torch.Tensor               # (B, ...) final samples x_N
    memorization: Optional[MemorizationScores] = None
    extra: dict = field(default_factory=dict)
    w_max_traj: Optional[np.ndarray] = None    # (N, B) largest posterior weight of D* at x_i
    w_max_train: Optional[np.ndarray] = None   # (N, M) the same at the noised training points
    n_eff_traj: Optional[np.ndarray] = None    # (N, B) 1 / sum_j w_j^2
    n_eff_train: Optional[np.ndarray] = None   # (N, M)

    def summary(self) -> dict:
        out = dict(n_steps=len(self.sigmas), n_samples=int(self.r_traj.shape[1]),
                   n_train_points=int(self.r_train.shape[1]))
        if self.memorization is not None:
            out["fraction_memorized"] = self.memorization.fraction_memorized
        return out


def noised_training_points(train: torch.Tensor, sigma: float, sigma_index: int, seed: int = 0,
                           noise_device="cpu", dtype=torch.float32) -> torch.Tensor:
    """y_k + sigma n_k for the rows of `train` (already the chosen subset), noise from one generator per
    (seed, sigma_index), drawn on noise_device and moved to train's device."""
    g = torch.Generator(device=torch.device(noise_device)).manual_seed(derive_seed(seed, "traj-noise", sigma_index))
    noise = torch.randn(tuple(train.shape), generator=g, device=noise_device, dtype=dtype).to(train.device)
    return train.to(dtype) + sigma * noise


@torch.no_grad()
def nearest_train_distance(points: torch.Tensor, ideal: IdealDenoiser, query_chunk: int = 1024,
                           train_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from each point to its nearest training point, and that point's index, on the device of
    `ideal` (whose float64 copy of the training set and squared norms are reused).

    Search: chunked float64 ||x||^2 + ||y||^2 - 2 x.y (rounding error ~ d * 1e-16 * (||x||^2 + ||y||^2)),
    then the winner's distance is recomputed by direct differences in float64. The index can differ from
    the exact nearest one only between training points whose distances agree to ~1e-12 relative, which
    leaves r unchanged. memorization.nearest_neighbours certifies a float32 fast pass instead, and at large
    sigma (all training points nearly equidistant) falls back to exact rescans for almost every query:
    5x slower here (256 + 256 queries x 18 steps against 2,000 images of 3x32x32 on the CPU)."""
    data, sq_norms = ideal.data, ideal.sq_norms
    x_all = points.reshape(points.shape[0], -1).to(device=data.device, dtype=torch.float64)
    dist = torch.empty(x_all.shape[0], dtype=torch.float64, device=data.device)
    index = torch.empty(x_all.shape[0], dtype=torch.int64, device=data.device)
    for q in range(0, x_all.shape[0], query_chunk):
        x = x_all[q:q + query_chunk]
        x_sq = (x * x).sum(1, keepdim=True)
        best = torch.full((x.shape[0],), torch.inf, dtype=torch.float64, device=data.device)
        best_i = torch.zeros(x.shape[0], dtype=torch.int64, device=data.device)
        for r in range(0, data.shape[0], train_chunk):
            d2 = x_sq + sq_norms[None, r:r + train_chunk] - 2 * x @ data[r:r + train_chunk].T
            v, i = d2.min(1)
            better = v < best                      # strict: ties keep the lower index
            best = torch.where(better, v, best)
            best_i = torch.where(better, i + r, best_i)
        dist[q:q + query_chunk] = (x - data[best_i]).square().sum(1).sqrt()
        index[q:q + query_chunk] = best_i
    return dist, index


@torch.no_grad()
def posterior_concentration(points: torch.Tensor, sigma: float, ideal: IdealDenoiser, query_chunk: int = 1024,
                            train_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """How concentrated the ideal denoiser's posterior over the training points is at each point x:
    with w_j = softmax_j(-||x - y_j||^2 / (2 sigma^2)) (the weights D* averages the y_j with), returns
    (max_j w_j, 1 / sum_j w_j^2), float64 on the device of `ideal`. max w = 1 and n_eff = 1 when one
    training point takes all the posterior (x sits on it, relative to sigma); max w = 1/N and n_eff = N
    when all are equally likely. Streaming log-sum-exp over chunks of the training set: logits l_j, their
    running max m, S1 = sum exp(l_j - m), S2 = sum exp(2 (l_j - m)); max w = 1 / S1, n_eff = S1^2 / S2."""
    data, sq_norms = ideal.data, ideal.sq_norms
    x_all = points.reshape(points.shape[0], -1).to(device=data.device, dtype=torch.float64)
    w_max = torch.empty(x_all.shape[0], dtype=torch.float64, device=data.device)
    n_eff = torch.empty_like(w_max)
    inv = 1.0 / (2.0 * float(sigma) ** 2)
    for q in range(0, x_all.shape[0], query_chunk):
        x = x_all[q:q + query_chunk]
        x_sq = (x * x).sum(1, keepdim=True)
        m = torch.full((x.shape[0], 1), -torch.inf, dtype=torch.float64, device=data.device)
        s1 = torch.zeros_like(m)
        s2 = torch.zeros_like(m)
        for r in range(0, data.shape[0], train_chunk):
            logits = -(x_sq + sq_norms[None, r:r + train_chunk] - 2 * x @ data[r:r + train_chunk].T).clamp_min(0) * inv
            new_m = torch.maximum(m, logits.max(1, keepdim=True).values)
            scale = (m - new_m).exp()
            e = (logits - new_m).exp()
            s1 = s1 * scale + e.sum(1, keepdim=True)
            s2 = s2 * scale ** 2 + (e * e).sum(1, keepdim=True)
            m = new_m
        w_max[q:q + query_chunk] = (1.0 / s1).squeeze(1)
        n_eff[q:q + query_chunk] = (s1 * s1 / s2).squeeze(1)
    return w_max, n_eff


def nearest_train_ratio(points, sigma, train, ideal: Optional[IdealDenoiser] = None) -> tuple[np.ndarray, np.ndarray]:
    """r = min_j ||x - y_j|| / (sigma sqrt(d)) for each point, and the nearest index j (numpy).
    `ideal` (an IdealDenoiser of `train`) lets repeated calls share its float64 copy of the data."""
    ideal = ideal if ideal is not None else IdealDenoiser(_as_tensor(train))
    dist, idx = nearest_train_distance(points, ideal)
    d = math.prod(tuple(points.shape[1:]))
    return (dist / (float(sigma) * math.sqrt(d))).cpu().numpy(), idx.cpu().numpy()


def _sq_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() - b.double()).square().flatten(1).mean(1)


def trajectory_statistics(denoiser, train, *, n_samples: int = 256, seeds: Optional[Sequence[int]] = None,
                          sampler_kwargs: Optional[dict] = None, result=None, n_train_points: Optional[int] = None,
                          seed: int = 0, device=None, batch_size: int = 1024, ideal: Optional[IdealDenoiser] = None,
                          quantiles: Sequence[float] = QUANTILES, memorization: bool = True,
                          noise_device="cpu") -> TrajectoryAnalysis:
    """Run the sampler with trajectory capture and compare trajectories with noised training data.

    denoiser: D_theta(x, sigma, class_labels) (unconditional; D* is the unconditional ideal denoiser).
    train: (N, ...) training set in model space (images in [-1, 1], NCHW; toy points (N, d)).
    seeds: sample seeds (default range(n_samples)); sampler_kwargs go to samplers.generate (sampler,
    num_steps, sigma_min, sigma_max, rho, S_churn, ..., dtype); result: a SampleResult with a trajectory
    to analyse instead of sampling (from `generate` / `stochastic_sampler`, where x_i has noise level
    sigma_i; `ode_sampler` with a schedule whose s(t) != 1 records scaled x_i and is not supported).
    n_train_points: noised training points per sigma_i (default: as many as trajectories), a seeded subset
    of the training set, cycled when larger than the set, each row with its own noise. device: where
    D_theta, D* and the nearest neighbours run (default the denoiser's device). batch_size: rows per
    denoiser call (D* gets a whole step's trajectory points at once when they fit, as the sampler did).
    """
    with eval_mode(denoiser):
        return _trajectory_statistics(denoiser, train, n_samples, seeds, sampler_kwargs, result, n_train_points,
                                      seed, device, batch_size, ideal, quantiles, memorization, noise_device)


@torch.no_grad()
def _trajectory_statistics(denoiser, train, n_samples, seeds, sampler_kwargs, result, n_train_points, seed,
                           device, batch_size, ideal, quantiles, memorization, noise_device) -> TrajectoryAnalysis:
    from ..samplers import generate

    train = _as_tensor(train)
    device = torch.device(device) if device is not None else _infer_device(denoiser, train)
    shape = tuple(train.shape[1:])
    d = math.prod(shape)
    if result is None:
        seeds = list(range(n_samples)) if seeds is None else list(seeds)
        result = generate(denoiser, shape, seeds, device=device, return_trajectory=True, **(sampler_kwargs or {}))
    if result.trajectory is None:
        raise ValueError("the SampleResult has no trajectory; sample with return_trajectory=True")
    sigmas = [float(s) for s in result.sigmas]
    n_steps, n_traj = len(sigmas), result.trajectory.shape[1]
    traj_dtype = result.trajectory.dtype
    Y = train.to(device=device)
    device = Y.device                          # normalized ('cuda' -> 'cuda:0')
    ideal = ideal if ideal is not None else IdealDenoiser(Y)
    if ideal.data.device != device:
        raise ValueError(f"the ideal denoiser's data is on {ideal.data.device}, the analysis runs on {device}")
    m = n_traj if n_train_points is None else int(n_train_points)
    train_index = subset_indices(train.shape[0], m, seed).repeat(-(-m // train.shape[0]))[:m]
    Y_sub = Y[train_index.to(device)]

    e_traj = torch.empty(n_steps, n_traj, dtype=torch.float64, device=device)
    e_train = torch.empty(n_steps, m, dtype=torch.float64, device=device)
    r_all = torch.empty(n_steps, n_traj + m, dtype=torch.float64, device=device)
    w_all = torch.empty(n_steps, n_traj + m, dtype=torch.float64, device=device)
    n_all = torch.empty(n_steps, n_traj + m, dtype=torch.float64, device=device)
    nearest = torch.empty(n_steps, n_traj, dtype=torch.int64, device=device)
    for i, sigma in enumerate(sigmas):
        x_traj = result.trajectory[i].to(device)
        D_traj = result.denoised[i].to(device)
        for a in range(0, n_traj, batch_size):
            e_traj[i, a:a + batch_size] = _sq_err(D_traj[a:a + batch_size], ideal(x_traj[a:a + batch_size], sigma))
        x_noised = noised_training_points(Y_sub, sigma, i, seed, noise_device=noise_device, dtype=traj_dtype)
        for a in range(0, m, batch_size):
            x = x_noised[a:a + batch_size]
            e_train[i, a:a + batch_size] = _sq_err(denoiser(x, sigma, None).to(traj_dtype), ideal(x, sigma))
        both = torch.cat([x_traj, x_noised])
        dist, j = nearest_train_distance(both, ideal, query_chunk=batch_size)
        r_all[i], nearest[i] = dist / (sigma * math.sqrt(d)), j[:n_traj]
        w_all[i], n_all[i] = posterior_concentration(both, sigma, ideal, query_chunk=batch_size)
    r_all, nearest = r_all.cpu().numpy(), nearest.cpu().numpy()
    w_all, n_all = w_all.cpu().numpy(), n_all.cpu().numpy()
    r_traj, r_train = r_all[:, :n_traj], r_all[:, n_traj:]
    e_traj, e_train = e_traj.cpu().numpy(), e_train.cpu().numpy()

    scores = None
    if memorization:
        final = result.samples.to(device)
        if final.dim() > 2:     # images are clamped to the data range, as every written image (to_uint8) is:
            final = final.clamp(-1, 1)     # an undertrained model's overshoot is not a pixel value
        scores = memorization_scores(final, Y, device=device)
    steps = step_table(np.array(sigmas), r_traj, r_train, e_traj, e_train, quantiles)
    for name, a in (("w_max", w_all), ("n_eff", n_all)):     # posterior concentration (claim K3): medians
        steps[f"{name}_traj"], steps[f"{name}_train"] = np.median(a[:, :n_traj], 1), np.median(a[:, n_traj:], 1)
    return TrajectoryAnalysis(steps=steps, sigmas=np.array(sigmas), r_traj=r_traj, r_train=r_train, e_traj=e_traj,
                              e_train=e_train, nearest_traj=nearest, train_index=train_index.numpy(),
                              samples=result.samples, memorization=scores,
                              extra=dict(nfe=result.nfe, dim=d, sampler_kwargs=dict(sampler_kwargs or {})),
                              w_max_traj=w_all[:, :n_traj], w_max_train=w_all[:, n_traj:],
                              n_eff_traj=n_all[:, :n_traj], n_eff_train=n_all[:, n_traj:])


def _qname(q: float) -> str:
    return f"q{int(round(q * 100)):02d}"


def step_table(sigmas, r_traj, r_train, e_traj, e_train, quantiles: Sequence[float] = QUANTILES) -> pd.DataFrame:
    """Tidy per-step summary: step, sigma, n_traj, n_train; for r_traj and r_train mean, median and the
    quantiles (r_traj_q05, ...); r_overlap; e_traj, e_train (means), their standard errors and medians;
    e_ratio = e_traj / e_train."""
    lo, hi = np.quantile(r_train, [0.05, 0.95], axis=1)
    cols = dict(step=np.arange(len(sigmas)), sigma=np.asarray(sigmas, dtype=np.float64),
                n_traj=r_traj.shape[1], n_train=r_train.shape[1])
    for name, r in (("r_traj", r_traj), ("r_train", r_train)):
        cols[f"{name}_mean"] = r.mean(1)
        cols[f"{name}_median"] = np.median(r, 1)
        for q in quantiles:
            cols[f"{name}_{_qname(q)}"] = np.quantile(r, q, axis=1)
    cols["r_overlap"] = ((r_traj >= lo[:, None]) & (r_traj <= hi[:, None])).mean(1)
    for name, e in (("e_traj", e_traj), ("e_train", e_train)):
        cols[name] = e.mean(1)
        cols[f"{name}_se"] = e.std(1, ddof=1) / math.sqrt(e.shape[1]) if e.shape[1] > 1 else np.zeros(len(e))
        cols[f"{name}_median"] = np.median(e, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["e_ratio"] = cols["e_traj"] / cols["e_train"]
    return pd.DataFrame(cols)


def plot_trajectory(df: pd.DataFrame, path, title: Optional[str] = None, by: str = "model"):
    """Left: r_traj vs r_train over sigma (median, 5-95% band). Right: e_traj vs e_train (mean +- se).
    Several analyses can share one figure: stack their step tables with a `by` column (e.g. model)."""
    from ..plots import plt

    from ..io import atomic_savefig

    groups = list(df.groupby(by, sort=False)) if by in df.columns else [(None, df)]
    fig, (ax_r, ax_e) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    for n, (key, g) in enumerate(groups):
        g = g.sort_values("sigma")
        s = g["sigma"].to_numpy()
        tag = "" if key is None else f" ({key})"
        c_traj, c_train = plt.get_cmap("tab10")(2 * n % 10), plt.get_cmap("tab10")((2 * n + 1) % 10)
        for name, c, style in (("r_traj", c_traj, "-"), ("r_train", c_train, "--")):
            ax_r.plot(s, g[f"{name}_median"], style, color=c, label=f"{name}{tag}")
            if f"{name}_q05" in g and f"{name}_q95" in g:
                ax_r.fill_between(s, g[f"{name}_q05"], g[f"{name}_q95"], color=c, alpha=0.15, lw=0)
        for name, c, style in (("e_traj", c_traj, "-o"), ("e_train", c_train, "--s")):
            ax_e.errorbar(s, g[name], yerr=g.get(f"{name}_se"), fmt=style, ms=3, color=c, capsize=2,
                          label=f"{name}{tag}")
    ax_r.axhline(1.0, color="k", lw=0.6)
    ax_r.set_xscale("log")
    ax_r.set_yscale("log")
    ax_r.set_xlabel(r"$\sigma_i$")
    ax_r.set_ylabel(r"$\min_j \|x - y_j\| / (\sigma_i \sqrt{d})$")
    ax_r.set_title("distance to the nearest training point", fontsize=9)
    ax_r.legend(fontsize=7)
    ax_e.set_xscale("log")
    positive = df[["e_traj", "e_train"]].to_numpy()
    if (positive > 0).any():
        ax_e.set_yscale("symlog", linthresh=float(positive[positive > 0].min()))   # 0 (the ideal model) stays visible
    ax_e.set_ylim(bottom=0)
    ax_e.set_xlabel(r"$\sigma_i$")
    ax_e.set_ylabel(r"$\|D_\theta - D^*\|^2 / d$")
    ax_e.set_title("error against the ideal denoiser", fontsize=9)
    ax_e.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_savefig(path, fig)
    plt.close(fig)
