"""InfoNoise (Raya et al. 2026, arXiv 2602.18647 v2): an adaptive training distribution of sigma.

Sources. Only the paper's abstract (v2, 27 May 2026, arxiv.org/html/2602.18647; v1 at
arxiv.org/html/2602.18647v1) could be read for this module, not its body. Tags:
  [paper, abstract]   stated in the v2 abstract;
  [paper X, unverified]   equation / appendix numbers and their content as secondary descriptions of the
                      paper give them; not checked against the paper's text;
  [derived]           follows from I-MMSE; the tests check it against closed forms;
  [ours: reason]      our choice.

Only p(sigma) changes; the objective, its weight lambda(sigma) and the parameterization stay fixed
[paper, abstract] (here EDM's). The target allocation follows the conditional-entropy rate of the
forward process x_sigma = x_0 + sigma*eps, estimated from the denoising losses training already computes,
through I-MMSE [paper, abstract; eq. 10-11, unverified]. Over u = sigma (the VE coordinate,
gamma(sigma) = 1/sigma^2, |gamma'| = 2/sigma^3):

    q(sigma) d sigma = 1/2 |gamma'(sigma)| mmse(sigma) d sigma = mmse(sigma) / sigma^3 d sigma
                                                              [derived; paper eq. 13, unverified]

with mmse the expected *unweighted* squared error per dimension. Over ln sigma (our bins) the same
density is q_ln(sigma) = mmse(sigma) / sigma^2 (times the Jacobian sigma) [derived].

Algorithm [outline: paper Alg. 1, unverified; values ours unless tagged]:
  1. warm-up: until `warmup_img` training images have been observed the sampler is EDM's log-normal
     (the fixed prior pi_0 [paper Alg. 1, unverified]) [ours: counted in images, so that a run's first
     table is built from a model trained on as many images whatever the run's length];
  2. every step, (sigma, unweighted per-sample MSE) is added into `bins` bins uniform in ln sigma over
     [sigma_min, sigma_max] (device tensors, index_add_, no host sync); draws outside the grid and
     non-finite MSEs are not counted [ours];
  3. refresh when the images observed reach warmup_img, then every further `refresh_img` images:
       a. bin mean -> EMA across refreshes, est <- ema*est + (1-ema)*mean; a bin's first estimate is
          its mean. A bin with < min_count samples keeps its old value and [ours] carries its samples
          over to the next refresh instead of dropping them;
       b. bins never estimated are filled in ln(mmse) [ours]: linear interpolation in ln sigma
          between estimated bins; below the lowest, q_ln = mmse/sigma^2 held constant (mmse ~ sigma^2,
          the small-noise law of data with a density); above the highest, mmse held constant (it
          tends to the data variance);
       c. smoothing [ours]: Gaussian-kernel (std `smoothing` bins) local-linear regression of
          ln(mmse) along ln sigma; it leaves power laws mmse ~ sigma^k exact, edges included;
  4. gate the low-noise end, where the estimate is least reliable [paper eq. 14, unverified]:
         g(sigma) = sigma^n / (sigma^n + c^n),  n = gate_power = 3 [paper App. B.6, unverified];
     c by the onset rule [paper App. B.6, unverified]: normalize the sigma-coordinate profile
     r = mmse/sigma^3 by its maximum over the grid, r_bar = r / max r, p = gate_threshold = 0.002
     [paper App. B.6, unverified], and scan down from sigma_max to the first persistent crossing of p:
     c = inf{sigma : r_bar(sigma') < p for all sigma' >= sigma}, the upper edge of the low-noise segment
     where r_bar >= p. r grows like 1/sigma at small sigma for any data with a density (mmse ~ sigma^2), so its maximum sits at
     sigma_min and c lands where r has fallen to p of it (about 500 sigma_min if mmse stayed ~sigma^2):
     the gate engages for such profiles, unlike the same rule read on q_ln = mmse/sigma^2, which is flat
     and maximal at sigma_min (a rule on q_ln never engages, and pi ends up set by 1/lambda).
     [ours] "Persistent": the segment must reach down to sigma_min (r_bar >= p on every bin below c);
     for a monotone r this is the formula above; when r_bar is already under p at sigma_min (the exact
     mmse of discrete data vanishes faster than sigma^3, so r has an interior peak and no low-noise
     segment) there is nothing to cut and g = 1, where the formula read literally would put c above the
     interior peak and cut it. Between bin centres, c is where ln r_bar crosses ln p, linearly in
     ln sigma. `gate_c` fixes c instead (0 turns the gate off);
  5. rho = q*g / integral(q*g) [paper eq. 14, unverified]; sampling density pi proportional to
     rho / lambda, so that the effective allocation pi*lambda is rho [paper eq. 15, unverified; the
     abstract states that the schedule together with the loss weighting induces the effective allocation,
     and that only the schedule adapts] (the ratio is the same over sigma and over ln sigma); here pi over
     ln sigma, normalized on the bins, with lambda the preconditioning's own loss weight.

The sampler's density is piecewise constant in ln sigma: pi_i on bin i, zero outside
[sigma_min, sigma_max]. Sampling is the exact inverse of its piecewise-linear CDF [paper eq. 16,
unverified: inverse CDF on a grid]: draw r ~ U[0, 1), find bin i with C_i <= r < C_{i+1}, return
ln sigma = e_i + h * (r - C_i) / (C_{i+1} - C_i). Before the first refresh the sampler is EDM's LogNormal
itself (bit-identical draws). All draws come from the passed generator. The whole estimator
(accumulators, images observed, EMA, current table, counters, a bounded history of profile snapshots)
is in `state_dict()` as tensors, lists and numbers, so a resumed run samples from the same table. On
CUDA, index_add_ adds with atomics: the bin sums are bit-stable only under
torch.use_deterministic_algorithms(True), like the rest of GPU training.

Sources of the constants: n = 3 and p = 0.002 [paper App. B.6, unverified]; the grid
[sigma_min, sigma_max] = [0.002, 80] is EDM's sampling range [ours]; bins = 128, warmup_img = 200,000,
refresh_img = 50,000, ema = 0.9, smoothing = 2 bins, min_count = 8 [ours: secondary descriptions say the
paper holds these fixed per domain without giving their values; unverified].
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from ..sigma_dist import LogNormal, SigmaDistribution

# The params.yaml keys of a sigma_dist of kind 'infonoise' (besides `kind`) and our defaults.
DEFAULTS = dict(sigma_min=0.002, sigma_max=80.0,     # [ours] EDM's sampling range
                bins=128,                            # [ours]
                warmup_img=200_000, refresh_img=50_000,    # [ours] in training images, not fractions of the run
                ema=0.9, smoothing=2.0, min_count=8,  # [ours]
                gate_power=3.0,                      # n [paper App. B.6, unverified]
                gate_threshold=0.002,                # p [paper App. B.6, unverified]
                gate_c=None,                         # None: onset rule [paper App. B.6, unverified]; a number fixes c
                P_mean=-1.2, P_std=1.2)              # warm-up prior pi_0 [paper Alg. 1, unverified]: EDM's [ours]
PROFILE_KEYS = ("mmse", "q", "gate", "rho", "pi", "counts")
_STATE_VERSION = 2


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


def gate_sigma(ln_sigma: np.ndarray, mmse: np.ndarray, threshold: float) -> float:
    """c of the gate by the onset rule (module docstring, step 4) from the per-bin mmse at the bin
    centres ln_sigma (ascending): r = mmse / sigma^3 [derived: the sigma-coordinate density; paper eq. 13,
    unverified], r_bar = r / max r,
    c = the upper edge of the segment, reaching down to sigma_min, on which r_bar >= p; interpolated where
    ln r_bar crosses ln p between the last bin of that segment and the next one up [ours]. 0.0 (no gate)
    when r_bar < p already at the lowest bin: there is no low-noise segment to cut (e.g. the exact mmse
    of discrete data, which vanishes faster than sigma^3). The top bin's centre when r_bar >= p all the
    way up."""
    ln_sigma, mmse = np.asarray(ln_sigma, dtype=np.float64), np.asarray(mmse, dtype=np.float64)
    log_r = np.log(np.maximum(mmse, 1e-300)) - 3.0 * ln_sigma
    log_rbar = log_r - log_r.max()
    log_p = math.log(threshold)
    below = np.nonzero(log_rbar < log_p)[0]
    if not len(below):
        return float(math.exp(ln_sigma[-1]))
    k = int(below[0]) - 1                                    # bins 0..k all have r_bar >= p
    if k < 0:
        return 0.0
    t = (log_rbar[k] - log_p) / (log_rbar[k] - log_rbar[k + 1])  # log_rbar[k] >= log p > log_rbar[k + 1]
    return float(math.exp(ln_sigma[k] + t * (ln_sigma[k + 1] - ln_sigma[k])))


def gate(sigma: np.ndarray, c: float, power: float) -> np.ndarray:
    """g(sigma) = sigma^n / (sigma^n + c^n), written to stay finite for any c >= 0."""
    return 1.0 / (1.0 + (c / np.asarray(sigma, dtype=np.float64)) ** power)


class InfoNoise(SigmaDistribution):
    """Adaptive p(sigma) of InfoNoise; see the module docstring for every definition."""

    name = "infonoise"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, bins: int = 128,
                 warmup_img: int = 200_000, refresh_img: int = 50_000, ema: float = 0.9,
                 smoothing: float = 2.0, min_count: int = 8, gate_power: float = 3.0,
                 gate_threshold: float = 0.002, gate_c: Optional[float] = None, P_mean: float = -1.2,
                 P_std: float = 1.2, history: int = 64,
                 loss_weight_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max (got {sigma_min}, {sigma_max})")
        if int(bins) < 2 or not 0 <= ema < 1 or smoothing < 0 or int(min_count) < 1:
            raise ValueError("need bins >= 2, 0 <= ema < 1, smoothing >= 0, min_count >= 1")
        if not 0 < gate_threshold < 1 or gate_power <= 0 or P_std <= 0 or int(history) < 2:
            raise ValueError("need 0 < gate_threshold < 1, gate_power > 0, P_std > 0, history >= 2")
        if gate_c is not None and gate_c < 0:
            raise ValueError(f"gate_c must be None (onset rule) or >= 0, got {gate_c}")
        if int(warmup_img) < 0 or int(refresh_img) < 1:
            raise ValueError(f"need warmup_img >= 0 and refresh_img >= 1 (training images), got "
                             f"{warmup_img}, {refresh_img}")
        self.config = dict(sigma_min=float(sigma_min), sigma_max=float(sigma_max), bins=int(bins),
                           warmup_img=int(warmup_img), refresh_img=int(refresh_img), ema=float(ema),
                           smoothing=float(smoothing), min_count=int(min_count), gate_power=float(gate_power),
                           gate_threshold=float(gate_threshold),
                           gate_c=None if gate_c is None else float(gate_c), P_mean=float(P_mean),
                           P_std=float(P_std), history=int(history))
        self.bins = int(bins)
        self.warmup_img, self.refresh_img = int(warmup_img), int(refresh_img)
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
        self._step = 0                                    # observe() calls (training steps) so far
        self._nimg = 0                                    # training images observed so far
        self._next_refresh = self.warmup_img              # images observed at which the next refresh runs
        self._refreshes = 0
        self._profile_step = -1
        self._history: list = []
        self._set_table(None)

    @classmethod
    def from_spec(cls, spec: dict) -> "InfoNoise":
        unknown = set(spec) - set(DEFAULTS)
        if unknown:
            hint = (" (warm-up and refresh are counted in training images: warmup_img, refresh_img)"
                    if unknown & {"warmup_frac", "refresh_frac"} else "")
            raise ValueError(f"unknown InfoNoise parameters {sorted(unknown)}{hint}; allowed: {sorted(DEFAULTS)}")
        return cls(**{**DEFAULTS, **spec})

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
        """Per step: bin (sigma, mse) on sigma's device with index_add_ (no host sync); count the batch's
        images (every sigma drawn is one training image: the whole global batch under data parallelism);
        refresh when the images observed reach the next refresh point (one host sync per refresh)."""
        sigma, mse = sigma.detach().reshape(-1), mse.detach().reshape(-1)
        if self._sums.device != sigma.device:
            self._sums, self._counts = self._sums.to(sigma.device), self._counts.to(sigma.device)
        pos = sigma.log().sub_(self.ln_sigma_min).mul_(1 / self.bin_width).nan_to_num_(nan=-1.0)
        ok = (pos >= 0) & (pos <= self.bins) & torch.isfinite(mse)
        idx = pos.floor_().clamp_(0, self.bins - 1).long()
        self._sums.index_add_(0, idx, torch.where(ok, mse.to(torch.float64), 0.0))
        self._counts.index_add_(0, idx, ok.to(torch.float64))
        self._step = int(step) + 1
        self._nimg += sigma.numel()
        if self._nimg >= self._next_refresh:
            self.refresh()
            behind = (self._nimg - self._next_refresh) // self.refresh_img     # refresh points this batch passed
            self._next_refresh += (behind + 1) * self.refresh_img

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
        # 4. profile over ln sigma: q = mmse/sigma^2 [derived: eq. 13's density times the Jacobian sigma];
        # gate [paper eq. 14, unverified]
        q = mmse / sigma ** 2
        c = gate_sigma(u, mmse, cfg["gate_threshold"]) if cfg["gate_c"] is None else cfg["gate_c"]
        g = gate(sigma, c, cfg["gate_power"])
        # 5. allocation rho = q g / int q g [paper eq. 14, unverified]; pi ~ rho / lambda [paper eq. 15,
        # unverified; abstract: schedule and weighting together make the allocation], both over
        # ln(sigma), piecewise constant on the bins
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
        return dict(version=_STATE_VERSION, config=dict(self.config), step=self._step, nimg=self._nimg,
                    next_refresh=self._next_refresh, refreshes=self._refreshes, profile_step=self._profile_step,
                    sums=self._sums.detach().clone(), counts=self._counts.detach().clone(),
                    mmse_ema=torch.as_tensor(self._mmse_ema.copy()), profile=profile,
                    gate_sigma=float(self._gate_sigma),
                    mass=None if self._mass is None else self._mass.clone(),
                    history=[{k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()}
                             for s in self._history])

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"InfoNoise state version {state.get('version')!r}, expected {_STATE_VERSION} (version 1 "
                             f"counted warm-up and refresh as fractions of the run: retrain)")
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
        self._nimg, self._next_refresh = int(state["nimg"]), int(state["next_refresh"])
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
