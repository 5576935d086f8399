"""2D toy study of generalization vs memorization (methods.md section 5, ours (c)).

Kaiser & Kollmann: in 2D the optimal (ideal) flow field localizes on the training points; model error
or dense data support gives a smooth, generalizing field. This module measures both sides:

  * `flow_field`: the EDM probability-flow ODE velocity on a regular grid (EDM eq. 4 with
    sigma(t) = t, s(t) = 1):

        dx/dsigma = (x - D(x; sigma)) / sigma

    so -dx/dsigma points from x towards the denoised estimate D(x; sigma);
  * `field_error`: ||D_theta - D*|| per sigma, on the grid and on noised training points;
  * `fraction_near_training`: the fraction of samples within eps (L2) of a training point (exact
    nearest neighbours), beside Gu et al.'s ratio criterion d1/d2 < 1/3;
  * `gu_chance_level`, `chance_corrected`: in 2D, Gu's criterion passes by chance (about 11% of points
    drawn from locally uniform data have d1/d2 < 1/3), so a Gu fraction f is reported against the
    fraction of fresh draws of the true distribution that pass, as (f - chance) / (1 - chance);
  * `toy_sweep`: MLPs trained with the real loop (Trainer + EDMPrecond + DenoisingLoss(LogNormal()))
    over model width, training-set size N and training steps, sampled with EDM's Heun sampler;
  * plots: `plot_flow_fields`, `plot_memorization_sweep`.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..ideal import IdealDenoiser
from ..io import atomic_savefig
from .memorization import GU_THRESHOLD, memorization_scores, nearest_neighbours

__all__ = ["FlowField", "flow_field", "denoiser_divergence", "field_error", "NearTraining", "fraction_near_training",
           "gu_chance_level", "chance_corrected",
           "ToySweep", "toy_sweep", "train_toy_mlp", "sample_points", "sample_fraction", "plot_flow_fields",
           "plot_memorization_sweep", "DEFAULT_SIGMAS"]

DEFAULT_SIGMAS = (0.02, 0.1, 0.3, 1.0)
Denoiser = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# flow fields

def _grid(grid_lim: float, n_grid: int):
    axis = torch.linspace(-grid_lim, grid_lim, n_grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")       # row = y, column = x (imshow / quiver order)
    return axis, torch.stack([gx.flatten(), gy.flatten()], 1)


@torch.no_grad()
def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float, batch_size: int = 8192) -> torch.Tensor:
    """D(x; sigma) in float64 for (M, 2) points, in batches."""
    out = [denoiser(x[i:i + batch_size], float(sigma)).to(torch.float64)
           for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else x.new_zeros(x.shape)


@torch.no_grad()
def denoiser_divergence(denoiser: Denoiser, x: torch.Tensor, sigma: float, rel_step: float = 1e-2) -> torch.Tensor:
    """div_x D(x; sigma) = trace of the Jacobian dD/dx by central differences (step rel_step * sigma),
    float64. In 2D: 0 where D collapses its neighbourhood onto one point (the ideal denoiser at small
    sigma, memorization), about 1 where it projects onto a curve, 2 where it is the identity."""
    h = rel_step * float(sigma)
    div = torch.zeros(x.shape[0], dtype=torch.float64)
    for k in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, k] = h
        div += (_denoise(denoiser, x + e, sigma)[:, k] - _denoise(denoiser, x - e, sigma)[:, k]) / (2 * h)
    return div


@dataclass
class FlowField:
    """The denoiser and the probability-flow velocity on a regular n_grid x n_grid grid."""
    sigma: float
    axis: np.ndarray          # (n_grid,) coordinates along x and along y
    points: np.ndarray        # (n_grid**2, 2) grid points, row-major with y the slow index
    denoised: np.ndarray      # (n_grid**2, 2) D(x; sigma)
    velocity: np.ndarray      # (n_grid**2, 2) dx/dsigma = (x - D(x; sigma)) / sigma
    divergence: Optional[np.ndarray] = None   # (n_grid**2,) div_x D, when asked for

    @property
    def n_grid(self) -> int:
        return len(self.axis)

    @property
    def displacement(self) -> np.ndarray:
        """D(x) - x: where the flow goes as sigma decreases (= -sigma dx/dsigma)."""
        return self.denoised - self.points

    def as_images(self):
        """(U, V, magnitude) of D(x) - x as (n_grid, n_grid) arrays for quiver/streamplot."""
        d = self.displacement.reshape(self.n_grid, self.n_grid, 2)
        return d[..., 0], d[..., 1], np.linalg.norm(d, axis=-1)


def flow_field(denoiser: Denoiser, sigma: float, grid_lim: float = 1.25, n_grid: int = 25,
               divergence: bool = False) -> FlowField:
    """EDM's probability-flow ODE velocity dx/dsigma = (x - D(x; sigma)) / sigma on a regular grid
    [-grid_lim, grid_lim]^2 (EDM eq. 4, sigma(t) = t, s(t) = 1), computed in float64; with
    divergence=True also div_x D on the grid (`denoiser_divergence`)."""
    axis, pts = _grid(grid_lim, n_grid)
    D = _denoise(denoiser, pts, sigma)
    vel = (pts - D) / float(sigma)
    div = denoiser_divergence(denoiser, pts, sigma).numpy() if divergence else None
    return FlowField(sigma=float(sigma), axis=axis.numpy(), points=pts.numpy(), denoised=D.numpy(),
                     velocity=vel.numpy(), divergence=div)


def _noised_points(train: torch.Tensor, sigma: float, n_points: int, seed: int) -> torch.Tensor:
    """y_i + sigma * n with y_i drawn uniformly from the training set: where training puts its inputs."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, train.shape[0], (n_points,), generator=g)
    noise = torch.randn(n_points, train.shape[1], generator=g, dtype=torch.float64)
    return train[idx] + float(sigma) * noise


def field_error(trained: Denoiser, ideal: Denoiser, sigma, *, train_points=None, grid_lim: float = 1.25,
                n_grid: int = 25, n_noised: int = 1024, seed: int = 0, divergence: bool = True) -> pd.DataFrame:
    """||D_theta(x; sigma) - D*(x; sigma)|| per sigma on the grid and on noised training points.

    sigma: a float or a sequence. train_points (N, 2): where to draw the noised points y_i + sigma n
    (default: `ideal.data` when `ideal` is an IdealDenoiser; otherwise the grid only).
    Returns a tidy table, one row per (sigma, region) with region in {'grid', 'noised_train'}:
    rms, mean and max of the L2 error over the points, and rms_over_sigma = rms / sigma (the error of
    the velocity dx/dsigma). The same seeded points serve both denoisers, so D vs itself gives 0 exactly.
    divergence: add div_trained, div_ideal, the mean of div_x D over the points (0: collapse onto a
    training point; a smooth, generalizing field has larger values; see `denoiser_divergence`).
    """
    sigmas = [float(sigma)] if np.ndim(sigma) == 0 else [float(s) for s in sigma]
    if train_points is None and isinstance(ideal, IdealDenoiser):
        train_points = ideal.data
    train = None if train_points is None else _as_points(train_points)
    _, grid_pts = _grid(grid_lim, n_grid)
    rows = []
    for k, s in enumerate(sigmas):
        regions = {"grid": grid_pts}
        if train is not None:
            regions["noised_train"] = _noised_points(train, s, n_noised, seed + k)
        for region, pts in regions.items():
            err = (_denoise(trained, pts, s) - _denoise(ideal, pts, s)).norm(dim=1)
            row = dict(sigma=s, region=region, rms=err.pow(2).mean().sqrt().item(), mean=err.mean().item(),
                       max=err.max().item(), rms_over_sigma=err.pow(2).mean().sqrt().item() / s,
                       n_points=int(pts.shape[0]))
            if divergence:
                row.update(div_trained=denoiser_divergence(trained, pts, s).mean().item(),
                           div_ideal=denoiser_divergence(ideal, pts, s).mean().item())
            rows.append(row)
    return pd.DataFrame(rows)


def _as_points(x) -> torch.Tensor:
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.reshape(t.shape[0], -1).to(torch.float64)


# ----------------------------------------------------------------------------------------------------
# closeness of samples to the training set

@dataclass(frozen=True)
class NearTraining:
    eps: tuple                  # the thresholds
    fraction: tuple             # fraction of samples with d1 <= eps, per eps
    fraction_gu: float          # Gu et al.: fraction with d1 / d2 < 1/3 (nan when N < 2)
    d1: np.ndarray              # exact L2 distance of each sample to its nearest training point
    nearest: np.ndarray         # index of that training point
    ratio: np.ndarray           # d1 / d2 (nan when N < 2)

    def as_dict(self) -> dict:
        out = {f"fraction@{e:g}": f for e, f in zip(self.eps, self.fraction)}
        out["fraction_gu"] = self.fraction_gu
        return out


def fraction_near_training(samples, train, eps=0.02, threshold: float = GU_THRESHOLD) -> NearTraining:
    """Fraction of samples within eps (L2, inclusive) of some training point, by exact nearest
    neighbours, and Gu et al.'s ratio-based memorized fraction (d1/d2 < threshold) for comparison.

    samples (M, d), train (N, d): arrays or tensors; eps: a float or a sequence of floats."""
    eps_t = (float(eps),) if np.ndim(eps) == 0 else tuple(float(e) for e in eps)
    s, t = _as_points(samples), _as_points(train)
    if t.shape[0] >= 2:
        sc = memorization_scores(s, t, threshold=threshold, normalize=False)
        d1, nearest, ratio, gu = sc.d1, sc.nearest, sc.ratio, sc.fraction_memorized
    else:
        dist, idx = nearest_neighbours(s, t, k=1)
        d1, nearest = dist[:, 0], idx[:, 0]
        ratio, gu = np.full(len(d1), np.nan), float("nan")
    frac = tuple(float(np.mean(d1 <= e)) if len(d1) else float("nan") for e in eps_t)
    return NearTraining(eps=eps_t, fraction=frac, fraction_gu=float(gu), d1=d1, nearest=nearest, ratio=ratio)


def gu_chance_level(fresh, train, threshold: float = GU_THRESHOLD) -> float:
    """Chance level of Gu's criterion: the fraction of `fresh` points (new draws of the true data
    distribution, never trained on) whose nearest / second-nearest training distance ratio is below
    `threshold`. A perfectly generalizing model scores this, not 0. For N training points locally
    uniform in 2D (a Poisson process), d1/d2 < t has probability t^2: 1/9 = 11.1% at t = 1/3."""
    return float(fraction_near_training(fresh, train, eps=0.0, threshold=threshold).fraction_gu)


def chance_corrected(fraction, chance):
    """(fraction - chance) / (1 - chance): 0 at the chance level, 1 when every sample passes; negative
    below chance. nan when chance >= 1."""
    fraction, chance = np.asarray(fraction, dtype=np.float64), np.asarray(chance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(chance < 1, (fraction - chance) / (1 - chance), np.nan)
    return out if out.ndim else float(out)


# ----------------------------------------------------------------------------------------------------
# training and sampling (the real loop)

def train_toy_mlp(train_points, *, width: int, steps: Sequence[int], preset: str = "mlp-small",
                  depth: Optional[int] = None, batch_size: int = 128, lr: float = 3e-3,
                  ema_halflife_img: float = 500_000, seed: int = 0, progress: bool = False,
                  device="cpu", on_snapshot: Optional[Callable[[int, torch.nn.Module], None]] = None) -> dict:
    """Train F = build_network(preset, channels=2, width=width) under EDMPrecond with
    DenoisingLoss(LogNormal()) by `Trainer`; return {step: EMA denoiser (eval, copy)} at each step in
    `steps`. Training stops at each requested step and goes on; every draw of step k is seeded from
    (seed, k) (training.py), so the snapshots are those of one uninterrupted run."""
    from ..loss import DenoisingLoss
    from ..nets import build_network
    from ..precond import EDMPrecond
    from ..seeding import derive_seed
    from ..sigma_dist import LogNormal
    from ..training import TrainConfig, Trainer

    data = _as_points(train_points).float()
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    overrides = {"width": int(width)} if depth is None else {"width": int(width), "depth": int(depth)}
    with torch.random.fork_rng(devices=[]):  # initial weights (and the MLP's Fourier features) from seed
        torch.manual_seed(derive_seed(seed, "toy2d-init", int(width)))
        net = build_network(preset, channels=data.shape[1], **overrides)
    log_every = math.gcd(*steps)
    cfg = TrainConfig(steps=steps[0], batch_size=batch_size, lr=lr, ema_halflife_img=ema_halflife_img,
                      checkpoint_every=log_every, log_every=log_every, seed=seed)
    trainer = Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), data, cfg, device=device, progress=progress)
    snapshots = {}
    for s in steps:
        trainer.cfg = replace(cfg, steps=s)
        trainer.run()
        ema = copy.deepcopy(trainer.ema.model).eval().requires_grad_(False)
        snapshots[s] = ema
        if on_snapshot is not None:
            on_snapshot(s, ema)
    return snapshots


@torch.no_grad()
def sample_points(denoiser: Denoiser, n_samples: int, *, num_steps: int = 32, seed: int = 0,
                  device="cpu") -> np.ndarray:
    """n_samples 2D points by EDM's deterministic Heun sampler (Alg. 1, EDM time steps), float64."""
    from ..samplers import generate
    seeds = [seed * 1_000_003 + i for i in range(n_samples)]
    res = generate(denoiser, (2,), seeds, device=device, sampler="heun", num_steps=num_steps,
                   dtype=torch.float64)
    return res.samples.cpu().numpy()


def sample_fraction(denoiser: Denoiser, train_points, eps=0.02, *, n_samples: int = 1000,
                    num_steps: int = 32, seed: int = 0) -> NearTraining:
    """Sample from `denoiser` and measure closeness to `train_points` (fraction_near_training)."""
    return fraction_near_training(sample_points(denoiser, n_samples, num_steps=num_steps, seed=seed),
                                  train_points, eps)


# ----------------------------------------------------------------------------------------------------
# the sweep

@dataclass
class ToySweep:
    """Result of `toy_sweep`.

    table: tidy, one row per (factor, model, width, n_train, step, eps); 'factor' in {'width',
      'n_train', 'step'} says which one-at-a-time sweep the row belongs to (the base configuration
      appears once per factor). Columns: dataset, factor, model ('mlp' | 'ideal'), width, n_train,
      step, eps, fraction, fraction_gu, fraction_heldout (fresh draws of the true distribution within
      eps of the training set: what a perfectly generalizing model would score; it rises with N as the
      data get dense), excess = fraction - fraction_heldout, fraction_gu_chance (the Gu fraction of the
      same fresh draws: gu_chance_level), fraction_gu_corrected = chance_corrected(fraction_gu,
      fraction_gu_chance), n_params (of F; nan for D*), n_samples, seed.
    evaluations: every (run, checkpoint) evaluated, same columns without 'factor'.
    models: {(width, n_train, step): EMA denoiser (EDMPrecond; its state_dict is what models.save_model
      takes as ema_state)}; net_cfgs: {width: network config for models.save_model / load_model};
      train_sets: {n_train: (N, 2) array}.
    """
    table: pd.DataFrame
    evaluations: pd.DataFrame
    models: dict = field(repr=False)
    train_sets: dict = field(repr=False)
    net_cfgs: dict = field(default_factory=dict)
    runtime_s: float = 0.0


def toy_sweep(dataset: str = "gmm", widths: Sequence[int] = (32, 128, 512),
              n_trains: Sequence[int] = (8, 32, 128, 1024), steps: Sequence[int] = (250, 500, 1000, 2000), *,
              base_width: Optional[int] = None, base_n: Optional[int] = None, eps=0.02,
              n_samples: int = 1000, num_steps: int = 32, preset: str = "mlp-small", depth: Optional[int] = None,
              batch_size: int = 128, lr: float = 3e-3, seed: int = 0, data_seed: int = 0,
              include_ideal: bool = True, progress: bool = False, device="cpu") -> ToySweep:
    """One-at-a-time sweeps around a base run (base_width, base_n; defaults: the middle width and the
    smallest N, a configuration that memorizes): width at N = base_n, N at width = base_width, training
    steps of the base run. Every run is trained once up to max(steps) with EMA snapshots at each of
    `steps`; the width and N sweeps read the last snapshot. Training sets: make_toy(dataset, N,
    seed=data_seed) (so the N sets differ, not nested). Samples: `n_samples` per model from the same
    seeds 0.. (common latents across models), Heun with `num_steps` steps, float64. include_ideal adds
    the ideal denoiser of each training set to the N sweep (model='ideal'). progress: one line per
    run on stderr. Defaults: 6 runs, about 1 min on one CPU thread."""
    from ..toy2d import make_toy

    t0 = time.perf_counter()
    widths, n_trains, steps = [int(w) for w in widths], [int(n) for n in n_trains], sorted({int(s) for s in steps})
    base_width = sorted(widths)[(len(widths) - 1) // 2] if base_width is None else int(base_width)
    base_n = min(n_trains) if base_n is None else int(base_n)
    eps_t = (float(eps),) if np.ndim(eps) == 0 else tuple(float(e) for e in eps)
    runs = sorted({(w, base_n) for w in widths} | {(base_width, n) for n in n_trains} | {(base_width, base_n)})
    train_sets = {n: make_toy(dataset, n, seed=data_seed) for n in sorted({n for _, n in runs})}
    heldout = make_toy(dataset, n_samples, seed=data_seed + 10_007)
    heldout_near = {n: fraction_near_training(heldout, x, eps_t) for n, x in train_sets.items()}
    heldout_frac = {n: h.fraction for n, h in heldout_near.items()}
    gu_chance = {n: h.fraction_gu for n, h in heldout_near.items()}        # = gu_chance_level(heldout, x)

    def rows_for(model_kind, w, n, s, near):
        return [dict(dataset=dataset, model=model_kind, width=w, n_train=n, step=s, eps=e, fraction=f,
                     fraction_gu=near.fraction_gu, fraction_heldout=heldout_frac[n][i],
                     excess=f - heldout_frac[n][i], fraction_gu_chance=gu_chance[n],
                     fraction_gu_corrected=chance_corrected(near.fraction_gu, gu_chance[n]),
                     n_params=n_params.get(w, float("nan")), n_samples=n_samples,
                     seed=seed) for i, (e, f) in enumerate(zip(near.eps, near.fraction))]

    from ..nets import count_parameters
    models, rows, n_params = {}, [], {}
    net_cfgs = {w: {"preset": preset, "channels": 2, "width": w, **({} if depth is None else {"depth": int(depth)})}
                for w in widths + [base_width]}
    for r, (w, n) in enumerate(runs):
        t_run = time.perf_counter()
        snaps = train_toy_mlp(train_sets[n], width=w, steps=steps, preset=preset, depth=depth,
                              batch_size=batch_size, lr=lr, seed=seed, progress=False, device=device)
        for s, D in snaps.items():
            models[(w, n, s)] = D
            n_params[w] = count_parameters(D.net)
            near = sample_fraction(D, train_sets[n], eps_t, n_samples=n_samples, num_steps=num_steps)
            rows += rows_for("mlp", w, n, s, near)
        if progress:
            last = rows[-len(eps_t):]
            print(f"[toy_sweep] run {r + 1}/{len(runs)} width={w} N={n}: "
                  f"fraction@{eps_t[0]:g}={last[0]['fraction']:.3f} gu={last[0]['fraction_gu']:.3f} "
                  f"({time.perf_counter() - t_run:.1f} s)", file=sys.stderr, flush=True)
    if include_ideal:
        for n in n_trains:
            ideal = IdealDenoiser(torch.from_numpy(train_sets[n]).double())
            near = sample_fraction(ideal, train_sets[n], eps_t, n_samples=n_samples, num_steps=num_steps)
            rows += rows_for("ideal", float("nan"), n, float("nan"), near)
    evaluations = pd.DataFrame(rows)

    last = steps[-1]
    ev = evaluations
    mlp = ev[ev.model == "mlp"]
    parts = [mlp[(mlp.n_train == base_n) & (mlp.step == last) & mlp.width.isin(widths)].assign(factor="width"),
             pd.concat([mlp[(mlp.width == base_width) & (mlp.step == last) & mlp.n_train.isin(n_trains)],
                        ev[ev.model == "ideal"]]).assign(factor="n_train"),
             mlp[(mlp.width == base_width) & (mlp.n_train == base_n)].assign(factor="step")]
    table = pd.concat(parts, ignore_index=True)
    table = table[["dataset", "factor"] + [c for c in table.columns if c not in ("dataset", "factor")]]
    return ToySweep(table=table, evaluations=evaluations, models=models, train_sets=train_sets,
                    net_cfgs=net_cfgs, runtime_s=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------
# plots

def _plt():
    from ..plots import plt
    return plt


def plot_flow_fields(ideal: Denoiser, trained_models: Mapping[str, Denoiser], train_points, sigmas=DEFAULT_SIGMAS,
                     path=None, *, grid_lim: float = 1.25, n_grid: int = 21, support_rel_density: float = 1e-3,
                     panel_size: float = 2.6):
    """Panels: one row per model (first the ideal denoiser), one column per sigma.

    Arrows: the direction of D(x; sigma) - x (where the probability flow goes as sigma falls), unit
    length, coloured by ||D(x; sigma) - x|| / sigma = ||dx/dsigma|| on one log scale for all panels
    (about sqrt(2) on noised data, large far from it). Dashed line: the support of the noised training
    data (density of y_i + sigma n at `support_rel_density` times its peak); outside it no training
    input ever lands and a net's field is extrapolation. Red dots: the training points.
    Returns the figure (written to `path` if given, and then closed)."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    rows = [("ideal D*", ideal)] + list(trained_models.items())
    pts = _as_points(train_points).numpy()
    norm = LogNorm(vmin=0.1, vmax=100.0)
    fine_axis, fine = _grid(grid_lim, 4 * n_grid)
    fig, axes = plt.subplots(len(rows), len(sigmas), squeeze=False, constrained_layout=True,
                             figsize=(panel_size * len(sigmas) + 0.9, panel_size * len(rows) + 0.3))
    for j, s in enumerate(sigmas):
        support = _noised_support(fine, torch.from_numpy(pts), s, support_rel_density).numpy()
        for i, (label, D) in enumerate(rows):
            ax, f = axes[i, j], flow_field(D, s, grid_lim, n_grid)
            U, V, mag = f.as_images()
            unit = np.where(mag > 0, mag, 1.0)
            q = ax.quiver(f.axis, f.axis, U / unit, V / unit, np.clip(mag / s, norm.vmin, norm.vmax), norm=norm,
                          cmap="viridis", angles="xy", pivot="mid", scale=n_grid * 1.1, width=0.006)
            ax.contour(fine_axis.numpy(), fine_axis.numpy(), support.reshape(4 * n_grid, 4 * n_grid).astype(float),
                       levels=[0.5], colors="0.4", linewidths=0.8, linestyles="--")
            ax.scatter(pts[:, 0], pts[:, 1], s=5 if len(pts) > 64 else 16, c="crimson", zorder=3,
                       edgecolors="k", linewidths=0.3 if len(pts) > 64 else 0.5)
            ax.set_xlim(-grid_lim, grid_lim)
            ax.set_ylim(-grid_lim, grid_lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"σ = {s:g}")
            if j == 0:
                ax.set_ylabel(label)
    fig.colorbar(q, ax=axes, location="right", shrink=0.5).set_label("‖D(x; σ) − x‖ / σ = |dx/dσ|")
    fig.suptitle("Probability-flow direction D(x; σ) − x; red: training points; dashed: support of noised data")
    if path is not None:
        atomic_savefig(path, fig, dpi=110)
        plt.close(fig)
    return fig


def _noised_support(x: torch.Tensor, train: torch.Tensor, sigma: float, rel_density: float) -> torch.Tensor:
    """Mask of points where p_sigma(x) = mean_i N(x; y_i, sigma^2 I) >= rel_density * max_i p_sigma(y_i)
    (the peak approximated by the largest value at a training point or grid point)."""
    def log_p(q):
        d2 = torch.cdist(q.double(), train.double()).pow(2)
        return torch.logsumexp(-d2 / (2 * sigma ** 2), dim=1)
    lp = log_p(x)
    peak = torch.maximum(lp.max(), log_p(train).max())
    return lp >= peak + math.log(rel_density)


_FACTOR_AXES = {"width": ("MLP width", "(a) model size"), "n_train": ("training points N", "(b) dataset size"),
                "step": ("training steps", "(c) training time")}


def plot_memorization_sweep(df: pd.DataFrame, path=None, *, eps: Optional[float] = None):
    """Three panels, fraction of samples near a training point vs (a) width, (b) N, (c) steps, from
    `ToySweep.table` (needs columns factor, width, n_train, step, fraction; optional: model, eps,
    fraction_gu, fraction_heldout). Rows of one eps are used (default: the smallest); seeds are
    averaged. Solid: within eps; dotted grey: fresh data within eps (chance level, rises with N as the
    data get dense); dash-dot: the excess over it; dashed: Gu's ratio criterion, chance-corrected when
    the table has fraction_gu_corrected; stars: ideal D*."""
    plt = _plt()
    from matplotlib.ticker import FixedLocator, NullLocator

    need = {"factor", "width", "n_train", "step", "fraction"}
    if not need <= set(df.columns):
        raise ValueError(f"memorization sweep table lacks columns {sorted(need - set(df.columns))}")
    if "eps" in df.columns and len(df):
        eps = float(df["eps"].min()) if eps is None else float(eps)
        df = df[np.isclose(df["eps"], eps)]
    model = df["model"] if "model" in df.columns else pd.Series("mlp", index=df.index)
    eps_txt = f" = {eps:g}" if eps is not None else ""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.9), constrained_layout=True)
    for ax, (factor, (xlabel, title)) in zip(axes, _FACTOR_AXES.items()):
        sub = df[(df["factor"] == factor) & (model == "mlp")]
        ideal = df[(df["factor"] == factor) & (model == "ideal")]
        xs = sorted(set(sub[factor].dropna()) | set(ideal[factor].dropna()))
        if not sub.empty:
            g = sub.groupby(factor).mean(numeric_only=True).sort_index()
            ax.plot(g.index, g["fraction"], "o-", color="C0", label=f"within ε{eps_txt}")
            if "fraction_heldout" in g:
                ax.plot(g.index, g["fraction_heldout"], ":", color="0.5", label="fresh data within ε (chance)")
                ax.plot(g.index, g["fraction"] - g["fraction_heldout"], "^-.", color="C2", label="excess over chance")
            if "fraction_gu_corrected" in g:     # Gu's criterion passes ~11% of 2D points by chance
                ax.plot(g.index, g["fraction_gu_corrected"], "s--", color="C1",
                        label="Gu d1/d2 < 1/3, chance-corrected")
            elif "fraction_gu" in g:
                ax.plot(g.index, g["fraction_gu"], "s--", color="C1", label="Gu: d1/d2 < 1/3 (not chance-corrected)")
        if not ideal.empty:
            gi = ideal.groupby(factor).mean(numeric_only=True).sort_index()
            ax.plot(gi.index, gi["fraction"], "*", color="C3", ms=11, label="ideal D*, within ε")
        ax.set_xscale("log")
        if xs:
            ax.xaxis.set_major_locator(FixedLocator(xs))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([f"{x:g}" for x in xs])
        ax.set_ylim(-0.15, 1.05)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel(xlabel)
        fixed = [c for c in _FACTOR_AXES if c != factor and not sub.empty and sub[c].nunique() == 1]
        note = ", ".join(f"{c}={sub[c].iloc[0]:g}" for c in fixed)
        ax.set_title(title + (f"\n({note})" if note else ""), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of samples")
    handles = {}
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncol=len(handles),
                   fontsize=8, frameon=False)
    if path is not None:
        atomic_savefig(path, fig, dpi=110)
        plt.close(fig)
    return fig
