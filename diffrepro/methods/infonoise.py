"""InfoNoise (Raya et al. 2026, arXiv 2602.18647): an adaptive training distribution of sigma.

Only p(sigma) changes; the loss, lambda(sigma) and the preconditioning stay EDM's. The target
allocation follows the conditional-entropy rate of the forward process x_sigma = x_0 + sigma*eps,
which I-MMSE gives from the denoising error training already computes (methods.md section 3):

    dH(x_0 | x_sigma) / d ln sigma = mmse(sigma) / sigma^2 =: q(sigma)      (mmse per dimension)

Algorithm (paper outline; the values are our defaults, see methods.md):
  1. warm-up: the first W = round(warmup_frac * total_steps) steps draw from EDM's log-normal;
  2. every step, (sigma, unweighted per-sample MSE) is added into `bins` bins uniform in ln sigma over
     [sigma_min, sigma_max] (device tensors, index_add_, no host sync); draws outside the grid and
     non-finite MSEs are not counted;
  3. refresh after observing step n = W + j*K, j >= 0, K = max(1, round(refresh_frac * total_steps)):
       a. bin mean -> EMA across refreshes, est <- ema*est + (1-ema)*mean; a bin's first estimate is
          its mean. A bin with < min_count samples keeps its old value and [ours] carries its samples
          over to the next refresh instead of dropping them;
       b. bins never estimated are filled in ln(mmse) [ours]: linear interpolation in ln sigma
          between estimated bins; below the lowest, q = mmse/sigma^2 held constant (mmse ~ sigma^2,
          the small-noise law of data with a density); above the highest, mmse held constant (it
          tends to the data variance);
       c. smoothing [ours]: Gaussian-kernel (std `smoothing` bins) local-linear regression of
          ln(mmse) along ln sigma; it leaves power laws mmse ~ sigma^k exact, edges included;
  4. profile q = mmse/sigma^2 at the bin centres; gate g(sigma) = sigma^n / (sigma^n + c^n),
     n = gate_power. c [ours, precise form of the paper's rule]: with qn = q / max(q), scan the bins
     from sigma_max down; pass the high-sigma tail where qn < p, enter the band where qn >= p
     (p = gate_threshold), and take the first bin below that band where qn < p again; c is where
     ln(qn) crosses ln(p) by linear interpolation in ln sigma between that bin's centre and the
     centre above. If qn never falls back under p, c = 0 and g = 1 (no gate);
  5. rho = q*g / integral(q*g d ln sigma); sampling density over ln sigma pi = (rho/lambda) /
     integral(rho/lambda d ln sigma), so that pi*lambda is proportional to rho.

The sampler's density is piecewise constant in ln sigma: pi_i on bin i, zero outside
[sigma_min, sigma_max]. Sampling is the exact inverse of its piecewise-linear CDF: draw r ~ U[0, 1),
find bin i with C_i <= r < C_{i+1}, return ln sigma = e_i + h * (r - C_i) / (C_{i+1} - C_i).
Before the first refresh the sampler is EDM's LogNormal itself (bit-identical draws). All draws come
from the passed generator. The whole estimator (accumulators, EMA, current table, counters, a
bounded history of profile snapshots) is in `state_dict()` as tensors, lists and numbers, so a
resumed run samples from the same table. On CUDA, index_add_ adds with atomics: the bin sums are
bit-stable only under torch.use_deterministic_algorithms(True), like the rest of GPU training.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from ..sigma_dist import LogNormal, SigmaDistribution

# The params.yaml keys of a sigma_dist of kind 'infonoise' (besides `kind`) and our defaults.
DEFAULTS = dict(sigma_min=0.002, sigma_max=80.0, bins=128, warmup_frac=0.02, refresh_frac=0.01,
                ema=0.9, smoothing=2.0, min_count=8, gate_power=3.0, gate_threshold=0.002,
                P_mean=-1.2, P_std=1.2)
PROFILE_KEYS = ("mmse", "q", "gate", "rho", "pi", "counts")
_STATE_VERSION = 1


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM's lambda(sigma), used when no `loss_weight_fn` was attached (build_objective attaches
    the preconditioning's own)."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def smooth_local_linear(y: np.ndarray, width: float) -> np.ndarray:
    """Gaussian-kernel (std `width` samples, cut at 4 std) local-linear regression of y on its
    index: exact for linear y, also at the ends. width <= 0 returns y."""
    y = np.asarray(y, dtype=np.float64)
    if width <= 0 or y.size < 2:
        return y.copy()
    idx = np.arange(y.size, dtype=np.float64)
    d = idx[None, :] - idx[:, None]                      # x_j - x_i, row i is the fit at i
    w = np.exp(-0.5 * (d / width) ** 2) * (np.abs(d) <= 4 * width + 1e-9)
    s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    t0, t1 = (w * y).sum(1), (w * d * y).sum(1)
    det = s0 * s2 - s1 ** 2
    ok = det > 1e-9 * s0 ** 2                            # else the kernel sees one point only
    local_linear = (s2 * t0 - s1 * t1) / np.where(ok, det, 1.0)
    return np.where(ok, local_linear, t0 / s0)


def gate_sigma(ln_sigma: np.ndarray, q: np.ndarray, threshold: float) -> float:
    """c of the gate (module docstring, step 4): 0.0 when the normalised profile never falls back
    under `threshold` below its band."""
    qn = q / q.max()
    above = qn >= threshold
    band_top = int(np.nonzero(above)[0].max())          # exists: max(qn) = 1 >= threshold
    under = np.nonzero(~above[:band_top])[0]
    if under.size == 0:
        return 0.0
    i = int(under.max())                                 # first bin under p below the band
    lo, hi = math.log(qn[i]), math.log(qn[i + 1])        # qn[i] < p <= qn[i + 1]
    t = (math.log(threshold) - lo) / (hi - lo)
    return math.exp(ln_sigma[i] + t * (ln_sigma[i + 1] - ln_sigma[i]))


def gate(sigma: np.ndarray, c: float, power: float) -> np.ndarray:
    """g(sigma) = sigma^n / (sigma^n + c^n), written to stay finite for any c >= 0."""
    return 1.0 / (1.0 + (c / np.asarray(sigma, dtype=np.float64)) ** power)


class InfoNoise(SigmaDistribution):
    """Adaptive p(sigma) of InfoNoise; see the module docstring for every definition."""

    name = "infonoise"

    def __init__(self, total_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 bins: int = 128, warmup_frac: float = 0.02, refresh_frac: float = 0.01,
                 ema: float = 0.9, smoothing: float = 2.0, min_count: int = 8,
                 gate_power: float = 3.0, gate_threshold: float = 0.002, P_mean: float = -1.2,
                 P_std: float = 1.2, history: int = 64,
                 loss_weight_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if total_steps is None or int(total_steps) < 1:
            raise ValueError(f"InfoNoise needs total_steps >= 1 (got {total_steps!r})")
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
        if int(bins) < 2 or not 0 <= ema < 1 or smoothing < 0 or int(min_count) < 1:
            raise ValueError("need bins >= 2, 0 <= ema < 1, smoothing >= 0, min_count >= 1")
        if not 0 < gate_threshold < 1 or gate_power <= 0 or P_std <= 0 or int(history) < 2:
            raise ValueError("need 0 < gate_threshold < 1, gate_power > 0, P_std > 0, history >= 2")
        if not 0 <= warmup_frac <= 1 or not 0 < refresh_frac <= 1:
            raise ValueError("need 0 <= warmup_frac <= 1 and 0 < refresh_frac <= 1")
        self.config = dict(total_steps=int(total_steps), sigma_min=float(sigma_min),
                           sigma_max=float(sigma_max), bins=int(bins), warmup_frac=float(warmup_frac),
                           refresh_frac=float(refresh_frac), ema=float(ema), smoothing=float(smoothing),
                           min_count=int(min_count), gate_power=float(gate_power),
                           gate_threshold=float(gate_threshold), P_mean=float(P_mean),
                           P_std=float(P_std), history=int(history))
        self.bins = int(bins)
        self.warmup_steps = int(round(warmup_frac * total_steps))               # W
        self.refresh_every = max(1, int(round(refresh_frac * total_steps)))     # K
        self.prior = LogNormal(P_mean, P_std)
        self.ln_sigma_min, self.ln_sigma_max = math.log(sigma_min), math.log(sigma_max)
        self.bin_width = (self.ln_sigma_max - self.ln_sigma_min) / self.bins     # h
        self.ln_sigma = self.ln_sigma_min + (np.arange(self.bins) + 0.5) * self.bin_width
        self.loss_weight_fn = loss_weight_fn
        self._sums = torch.zeros(self.bins, dtype=torch.float64)
        self._counts = torch.zeros(self.bins, dtype=torch.float64)
        self._mmse_ema = np.full(self.bins, np.nan)       # NaN: never estimated
        self._profile: Optional[dict] = None              # numpy arrays of the last refresh
        self._gate_sigma = math.nan
        self._step = 0                                    # steps observed
        self._refreshes = 0
        self._profile_step = -1
        self._history: list = []
        self._set_table(None)

    @classmethod
    def from_spec(cls, spec: dict, total_steps: Optional[int] = None) -> "InfoNoise":
        unknown = set(spec) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown InfoNoise parameters {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
        if total_steps is None:
            raise ValueError("InfoNoise needs the run's total number of training steps (total_steps)")
        return cls(total_steps=total_steps, **{**DEFAULTS, **spec})

    # ------------------------------------------------------------------ sampling
    @property
    def active(self) -> bool:
        """True once a table replaced the warm-up prior."""
        return self._mass is not None

    def _set_table(self, mass: Optional[np.ndarray]):
        self._mass = None if mass is None else torch.as_tensor(mass, dtype=torch.float64)
        self._device_tables: dict = {}

    def _tables(self, device: torch.device):
        """(bin masses, CDF at the bin edges, 1/mass or 0) on `device`, cached."""
        key = str(device)
        if key not in self._device_tables:
            mass = self._mass.to(device)
            cdf = torch.cat([mass.new_zeros(1), mass.cumsum(0)])
            cdf = cdf / cdf[-1]
            mass = cdf[1:] - cdf[:-1]
            inv_mass = torch.where(mass > 0, 1 / mass.clamp_min(1e-300), 0.0)
            self._device_tables[key] = (mass, cdf, inv_mass)
        return self._device_tables[key]

    def sample(self, n: int, generator: torch.Generator, device=None) -> torch.Tensor:
        device = torch.device(device) if device is not None else generator.device
        if self._mass is None:
            return self.prior.sample(n, generator, device)
        _, cdf, inv_mass = self._tables(device)
        r = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        i = torch.bucketize(r, cdf[1:], right=True).clamp_(max=self.bins - 1)      # C_i <= r < C_{i+1}
        frac = ((r - cdf.index_select(0, i)) * inv_mass.index_select(0, i)).clamp_(0, 1)   # zero-mass bins: never drawn
        ln_sigma = (i + frac).mul_(self.bin_width).add_(self.ln_sigma_min)
        return ln_sigma.exp().to(torch.float32)

    def log_density(self, sigma) -> torch.Tensor:
        """log pi(ln sigma) of the current sampler (the prior's before the first refresh)."""
        sigma = torch.as_tensor(sigma)
        if self._mass is None:
            return self.prior.log_density(sigma)
        mass = self._tables(sigma.device)[0]
        u = sigma.to(torch.float64).log()
        pos = torch.nan_to_num((u - self.ln_sigma_min) / self.bin_width, nan=-1.0)
        i = pos.floor().clamp(0, self.bins - 1).long()
        inside = (pos >= 0) & (pos <= self.bins)
        return torch.where(inside, (mass[i] / self.bin_width).log(), torch.full_like(u, -math.inf))

    # ------------------------------------------------------------------ estimation
    def observe(self, sigma: torch.Tensor, mse: torch.Tensor, step: int) -> None:
        """Per step: bin (sigma, mse) on sigma's device with index_add_ (no host sync); refresh on
        schedule (one host sync per refresh)."""
        sigma, mse = sigma.detach().reshape(-1), mse.detach().reshape(-1)
        if self._sums.device != sigma.device:
            self._sums, self._counts = self._sums.to(sigma.device), self._counts.to(sigma.device)
        pos = sigma.log().sub_(self.ln_sigma_min).mul_(1 / self.bin_width).nan_to_num_(nan=-1.0)
        ok = (pos >= 0) & (pos <= self.bins) & torch.isfinite(mse)
        idx = pos.floor_().clamp_(0, self.bins - 1).long()
        self._sums.index_add_(0, idx, torch.where(ok, mse.to(torch.float64), 0.0))
        self._counts.index_add_(0, idx, ok.to(torch.float64))
        self._step = n = int(step) + 1
        if n >= self.warmup_steps and (n - self.warmup_steps) % self.refresh_every == 0:
            self.refresh()

    def refresh(self) -> None:
        """Steps 3-5 of the module docstring; rebuilds the sampling table."""
        cfg = self.config
        counts, sums = self._counts.cpu().numpy().copy(), self._sums.cpu().numpy().copy()  # no views
        ready = counts >= cfg["min_count"]
        mean = np.where(ready, sums / np.maximum(counts, 1), np.nan)
        first = ready & np.isnan(self._mmse_ema)
        again = ready & ~np.isnan(self._mmse_ema)
        self._mmse_ema[first] = mean[first]
        self._mmse_ema[again] = cfg["ema"] * self._mmse_ema[again] + (1 - cfg["ema"]) * mean[again]
        consumed = torch.as_tensor(ready, device=self._sums.device)
        self._sums.masked_fill_(consumed, 0.0)            # bins under min_count carry their samples over
        self._counts.masked_fill_(consumed, 0.0)
        self._refreshes += 1
        if np.isnan(self._mmse_ema).all():                # nothing estimated yet: keep the prior
            return
        profile = self._profile_from(self._mmse_ema)
        self._gate_sigma = profile.pop("gate_sigma")
        self._profile = dict(profile, counts=np.where(ready, counts, 0.0))
        self._profile_step = self._step
        self._set_table(profile["pi"] * self.bin_width)
        self._history.append(self._snapshot_tensors())
        if len(self._history) > cfg["history"]:           # thin the older half; keep the latest
            self._history = self._history[:-1][::2] + self._history[-1:]

    def _profile_from(self, mmse_est: np.ndarray) -> dict:
        cfg, u = self.config, self.ln_sigma
        sigma = np.exp(u)
        # b. fill never-estimated bins in ln(mmse)
        seen = np.nonzero(np.isfinite(mmse_est))[0]
        floor = max(np.nanmax(mmse_est), 1e-300) * 1e-12
        y_seen = np.log(np.maximum(mmse_est[seen], floor))
        y = np.interp(u, u[seen], y_seen)                 # constant ln(mmse) above the highest seen bin
        lo = seen[0]
        y[:lo] = y_seen[0] + 2 * (u[:lo] - u[lo])         # q constant below the lowest seen bin
        # c. smooth ln(mmse) along ln(sigma)
        mmse = np.exp(smooth_local_linear(y, cfg["smoothing"]))
        # 4. profile, gate
        q = mmse / sigma ** 2
        c = gate_sigma(u, q, cfg["gate_threshold"])
        g = gate(sigma, c, cfg["gate_power"])
        # 5. allocation and sampling density over ln(sigma), piecewise constant on the bins
        rho = q * g
        rho = rho / (rho.sum() * self.bin_width)
        lam = self._loss_weight(sigma)
        pi = rho / lam
        pi = pi / (pi.sum() * self.bin_width)
        return dict(mmse=mmse, q=q, gate=g, rho=rho, pi=pi, gate_sigma=c)

    def _loss_weight(self, sigma: np.ndarray) -> np.ndarray:
        fn = self.loss_weight_fn or edm_loss_weight
        lam = fn(torch.as_tensor(sigma, dtype=torch.float64))
        lam = torch.as_tensor(lam).detach().to("cpu", torch.float64).numpy()
        lam = np.broadcast_to(lam, sigma.shape)
        if not (np.isfinite(lam).all() and (lam > 0).all()):
            raise ValueError("loss_weight_fn must give finite positive lambda(sigma) on the grid")
        return lam

    # ------------------------------------------------------------------ logging
    def _snapshot_tensors(self) -> dict:
        snap = {k: torch.as_tensor(self._profile[k], dtype=torch.float64) for k in PROFILE_KEYS}
        return dict(snap, step=int(self._profile_step), gate_sigma=float(self._gate_sigma))

    def _snapshot_numpy(self, snap: dict) -> dict:
        out = {k: np.array(v.numpy() if torch.is_tensor(v) else v) for k, v in snap.items()}   # copies
        out["ln_sigma"] = self.ln_sigma.copy()
        out["gate_threshold"] = np.asarray(self.config["gate_threshold"])
        return out

    def profile_snapshot(self) -> dict:
        """The current estimate as numpy arrays over the bin centres `ln_sigma`: mmse, q, gate, rho,
        pi (density over ln sigma), counts (samples consumed at the last refresh), plus 0-d arrays
        step (steps observed at that refresh), gate_sigma (c), gate_threshold. Before the first
        refresh the profile arrays are NaN, pi is the prior's density and step is -1."""
        if self._profile is None:
            nan = np.full(self.bins, np.nan)
            prior = self.prior.log_density(torch.as_tensor(np.exp(self.ln_sigma))).exp().numpy()
            snap = dict({k: nan.copy() for k in PROFILE_KEYS}, pi=prior, step=-1, gate_sigma=math.nan)
            return self._snapshot_numpy(snap)
        return self._snapshot_numpy(self._snapshot_tensors())

    def history(self) -> list:
        """Snapshots of past refreshes (bounded: older ones are thinned), oldest first."""
        return [self._snapshot_numpy(s) for s in self._history]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        profile = None if self._profile is None else {k: torch.tensor(v) for k, v in self._profile.items()}
        return dict(version=_STATE_VERSION, config=dict(self.config), step=self._step,
                    refreshes=self._refreshes, profile_step=self._profile_step,
                    sums=self._sums.detach().clone(), counts=self._counts.detach().clone(),
                    mmse_ema=torch.as_tensor(self._mmse_ema.copy()), profile=profile,
                    gate_sigma=float(self._gate_sigma),
                    mass=None if self._mass is None else self._mass.clone(),
                    history=[{k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                             for s in self._history])

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"InfoNoise state version {state.get('version')!r}, expected {_STATE_VERSION}")
        diff = {k: (state["config"].get(k), v) for k, v in self.config.items()
                if k != "history" and state["config"].get(k) != v}           # history only bounds the log
        if diff:
            raise ValueError(f"InfoNoise checkpoint was made with other parameters (saved, now): {diff}")
        device = self._sums.device
        self._sums = state["sums"].to(device, torch.float64).clone()
        self._counts = state["counts"].to(device, torch.float64).clone()
        self._mmse_ema = state["mmse_ema"].cpu().double().numpy().copy()
        self._profile = None if state["profile"] is None else \
            {k: v.cpu().double().numpy().copy() for k, v in state["profile"].items()}
        self._gate_sigma = float(state["gate_sigma"])
        self._step, self._refreshes = int(state["step"]), int(state["refreshes"])
        self._profile_step = int(state["profile_step"])
        self._history = [{k: (v.cpu().clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                         for s in state["history"]]
        self._set_table(None if state["mass"] is None else state["mass"].cpu())


def total_variation(a: SigmaDistribution, b: SigmaDistribution, lo: float = -14.0, hi: float = 10.0,
                    n: int = 48001) -> float:
    """TV distance between two distributions of ln(sigma), from their log_density on a fine grid
    of ln sigma in [lo, hi] (trapezoid rule)."""
    u = torch.linspace(lo, hi, n, dtype=torch.float64)
    pa, pb = a.log_density(u.exp()).double().exp(), b.log_density(u.exp()).double().exp()
    return 0.5 * torch.trapezoid((pa - pb).abs(), u).item()


__all__ = ["InfoNoise", "DEFAULTS", "edm_loss_weight", "smooth_local_linear", "gate_sigma", "gate",
           "total_variation"]
