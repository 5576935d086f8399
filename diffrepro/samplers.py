"""Samplers of EDM (Karras et al. 2022): Alg. 1 (deterministic Euler/Heun, for any sigma(t), s(t))
and Alg. 2 (stochastic, sigma(t) = t, s(t) = 1), with EDM / VP / VE time-step discretizations.

Each returns a `SampleResult` with the samples, the number of function evaluations per sample (NFE)
and, on request, the trajectory (x_i, sigma_i and D(x_i; sigma_i) per step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch


# ----------------------------------------------------------------------------------------------
# Time-step discretizations (EDM Table 1, "sampling steps"); each returns N sigmas plus sigma_N = 0.

def edm_sigma_steps(num_steps: int, sigma_min=0.002, sigma_max=80.0, rho=7.0, dtype=torch.float64):
    i = torch.arange(num_steps, dtype=dtype)
    steps = (sigma_max ** (1 / rho) + i / max(num_steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([steps, torch.zeros(1, dtype=dtype)])


def ve_sigma_steps(num_steps: int, sigma_min=0.02, sigma_max=100.0, dtype=torch.float64):
    i = torch.arange(num_steps, dtype=dtype)
    steps = (sigma_max ** 2 * (sigma_min ** 2 / sigma_max ** 2) ** (i / max(num_steps - 1, 1))).sqrt()
    return torch.cat([steps, torch.zeros(1, dtype=dtype)])


def vp_sigma_steps(num_steps: int, epsilon_s=1e-3, beta_d=19.9, beta_min=0.1, dtype=torch.float64):
    i = torch.arange(num_steps, dtype=dtype)
    t = 1 + i / max(num_steps - 1, 1) * (epsilon_s - 1)
    steps = ((0.5 * beta_d * t ** 2 + beta_min * t).exp() - 1).sqrt()
    return torch.cat([steps, torch.zeros(1, dtype=dtype)])


def sigma_steps(discretization: str, num_steps: int, **kw) -> torch.Tensor:
    table = {"edm": edm_sigma_steps, "ve": ve_sigma_steps, "vp": vp_sigma_steps}
    if discretization not in table:
        raise ValueError(f"unknown discretization {discretization!r}; choose one of {sorted(table)}")
    return table[discretization](num_steps, **kw)


# ----------------------------------------------------------------------------------------------
# Randomness that does not depend on the batch: one generator per sample seed.

class SeededNoise:
    """Per-sample generators (EDM's StackedRandomGenerator): sample k gets the same latents and
    the same stochastic-sampler noise whatever the batch it lands in or the device count."""

    def __init__(self, device, seeds: Sequence[int]):
        self.device = torch.device(device)
        self.seeds = [int(s) % (1 << 63) for s in seeds]
        self.generators = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        """Row k holds randn(shape[1:], generator=g_k), written in place."""
        assert shape[0] == len(self.generators)
        out = torch.empty(shape, device=self.device, dtype=dtype)
        for row, g in zip(out, self.generators):
            torch.randn(shape[1:], generator=g, out=row)
        return out


# ----------------------------------------------------------------------------------------------

@dataclass
class SampleResult:
    samples: torch.Tensor
    nfe: int
    sigmas: Optional[torch.Tensor] = None           # (N,) sigma at which D was evaluated first per step
    trajectory: Optional[torch.Tensor] = None       # (N+1, B, ...) x_i; last entry is the output
    denoised: Optional[torch.Tensor] = None         # (N, B, ...) D(x_i; sigma_i)
    extra: dict = field(default_factory=dict)


Denoiser = Callable[..., torch.Tensor]


def stochastic_sampler(denoiser: Denoiser, latents: torch.Tensor, sigmas: torch.Tensor, *,
                       solver: str = "heun", S_churn: float = 0.0, S_tmin: float = 0.0,
                       S_tmax: float = float("inf"), S_noise: float = 1.0,
                       noise: Optional[SeededNoise] = None, class_labels=None,
                       return_trajectory: bool = False, dtype=torch.float64) -> SampleResult:
    """EDM Alg. 2 (sigma(t) = t, s(t) = 1). `latents` are unit-variance; `sigmas` end with 0.
    With S_churn = 0 it is Alg. 1 (deterministic). Arithmetic in float64 by default."""
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r}; choose 'euler' or 'heun'")
    num_steps = len(sigmas) - 1
    sig = [float(s) for s in sigmas]
    x_next = latents.to(dtype) * sig[0]                                  # line 1
    xs, ds, used_sigmas, nfe = [], [], [], 0
    for i in range(num_steps):                                           # line 2
        x_cur, t_cur, t_next = x_next, sig[i], sig[i + 1]
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_tmin <= t_cur <= S_tmax else 0.0  # line 3
        t_hat = t_cur * (1 + gamma)                                      # line 4
        if gamma > 0:                                                     # line 5
            eps = noise.randn(x_cur.shape, dtype=dtype) if noise is not None else torch.randn_like(x_cur)
            x_hat = x_cur + math.sqrt(t_hat ** 2 - t_cur ** 2) * S_noise * eps
        else:
            x_hat = x_cur
        denoised = denoiser(x_hat, t_hat, class_labels).to(dtype)         # line 7
        nfe += 1
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur                         # line 8
        if return_trajectory:
            xs.append(x_hat)
            ds.append(denoised)
            used_sigmas.append(t_hat)
        if solver == "heun" and t_next != 0:                              # lines 9-11
            denoised_next = denoiser(x_next, t_next, class_labels).to(dtype)
            nfe += 1
            d_prime = (x_next - denoised_next) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    res = SampleResult(samples=x_next, nfe=nfe)
    if return_trajectory:
        res.trajectory = torch.stack(xs + [x_next])
        res.denoised = torch.stack(ds)
        res.sigmas = torch.tensor(used_sigmas, dtype=torch.float64)
    return res


def ode_sampler(denoiser: Denoiser, latents: torch.Tensor, sigmas: torch.Tensor, *, schedule=None,
                solver: str = "heun", class_labels=None, return_trajectory: bool = False,
                dtype=torch.float64) -> SampleResult:
    """EDM Alg. 1 for a general schedule sigma(t) and scaling s(t) (eq. 4):

        dx/dt = (sigma'(t)/sigma(t) + s'(t)/s(t)) x - sigma'(t) s(t)/sigma(t) D(x/s(t); sigma(t))

    `schedule` is an object with sigma, sigma_inv, sigma_deriv, s, s_deriv (a Preconditioning);
    None means the EDM schedule sigma(t) = t, s(t) = 1."""
    if solver not in ("euler", "heun"):
        raise ValueError(f"unknown solver {solver!r}; choose 'euler' or 'heun'")
    if schedule is None:
        sigma_fn = sigma_inv = lambda v: torch.as_tensor(v, dtype=torch.float64)
        sigma_d = lambda v: torch.ones((), dtype=torch.float64)
        s_fn = lambda v: torch.ones((), dtype=torch.float64)
        s_d = lambda v: torch.zeros((), dtype=torch.float64)
    else:
        sigma_fn, sigma_inv, sigma_d = schedule.sigma, schedule.sigma_inv, schedule.sigma_deriv
        s_fn, s_d = schedule.s, schedule.s_deriv
    ts = [float(sigma_inv(torch.as_tensor(s, dtype=torch.float64))) for s in sigmas[:-1]] + [0.0]

    def f(x, t):
        t64 = torch.tensor(t, dtype=torch.float64)
        sig, s = float(sigma_fn(t64)), float(s_fn(t64))
        dsig, ds = float(sigma_d(t64)), float(s_d(t64))
        D = denoiser(x / s, sig, class_labels).to(dtype)
        return (dsig / sig + ds / s) * x - dsig * s / sig * D, D, sig

    t0 = torch.tensor(ts[0], dtype=torch.float64)
    x_next = latents.to(dtype) * float(sigma_fn(t0)) * float(s_fn(t0))
    xs, dens, used, nfe = [], [], [], 0
    for i in range(len(ts) - 1):
        x_cur, t_cur, t_next = x_next, ts[i], ts[i + 1]
        d_cur, D, sig = f(x_cur, t_cur)
        nfe += 1
        x_next = x_cur + (t_next - t_cur) * d_cur
        if return_trajectory:
            xs.append(x_cur)
            dens.append(D)
            used.append(sig)
        if solver == "heun" and t_next != 0:
            d_prime, _, _ = f(x_next, t_next)
            nfe += 1
            x_next = x_cur + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
    res = SampleResult(samples=x_next, nfe=nfe)
    if return_trajectory:
        res.trajectory = torch.stack(xs + [x_next])
        res.denoised = torch.stack(dens)
        res.sigmas = torch.tensor(used, dtype=torch.float64)
    return res


EDM_RANGE, VE_RANGE = (0.002, 80.0), (0.02, 100.0)     # the discretizations' default sigma ranges (Table 1)


def trained_range(denoiser, discretization: str = "edm", sigma_min: Optional[float] = None,
                  sigma_max: Optional[float] = None) -> dict:
    """The sampler's (sigma_min, sigma_max) clamped to the range the denoiser was trained on, as EDM's
    generate.py does: max(sigma_min, D.sigma_min), min(sigma_max, D.sigma_max). Denoisers without that
    range (an IdealDenoiser, a plain function) and the VP discretization (its steps lie inside VP's trained
    range by construction) are left as asked; None means the discretization's default."""
    if discretization not in ("edm", "ve"):
        return {}
    lo, hi = EDM_RANGE if discretization == "edm" else VE_RANGE
    lo = lo if sigma_min is None else float(sigma_min)
    hi = hi if sigma_max is None else float(sigma_max)
    d_lo, d_hi = getattr(denoiser, "sigma_min", None), getattr(denoiser, "sigma_max", None)
    if isinstance(d_lo, (int, float)):
        lo = max(lo, float(d_lo))
    if isinstance(d_hi, (int, float)):
        hi = min(hi, float(d_hi))
    return {"sigma_min": lo, "sigma_max": hi}


def _sampler_call(sampler: str = "heun", discretization: str = "edm", num_steps: int = 18, sigma_min=0.002,
                  sigma_max=80.0, rho=7.0, S_churn=0.0, S_tmin=0.0, S_tmax=float("inf"), S_noise=1.0,
                  class_labels=None, return_trajectory=False, dtype=torch.float32):
    """The sampler that `generate` describes as a function of (denoiser, latents, noise), and its NFE."""
    kw = {}
    if discretization == "edm":
        kw = dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    elif discretization == "ve":
        kw = dict(sigma_min=sigma_min, sigma_max=sigma_max)
    sig = sigma_steps(discretization, num_steps, **kw)
    common = dict(class_labels=class_labels, return_trajectory=return_trajectory, dtype=dtype)
    if sampler == "stochastic":
        common.update(solver="heun", S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise)
    elif sampler in ("euler", "heun"):
        common.update(solver=sampler)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; choose 'euler', 'heun' or 'stochastic'")
    nfe = num_steps if common["solver"] == "euler" else 2 * num_steps - 1

    def run(denoiser, latents, noise):
        res = stochastic_sampler(denoiser, latents, sig, noise=noise if sampler == "stochastic" else None, **common)
        res.extra["sigma_range"] = (float(sig[-2]), float(sig[0]))     # the schedule's smallest, largest sigma
        return res
    return run, nfe


def generate(denoiser, shape, seeds: Sequence[int], *, device="cpu", sampler: str = "heun",
             num_steps: int = 18, discretization: str = "edm", sigma_min: float = 0.002,
             sigma_max: float = 80.0, rho: float = 7.0, S_churn: float = 0.0, S_tmin: float = 0.0,
             S_tmax: float = float("inf"), S_noise: float = 1.0, class_labels=None,
             return_trajectory: bool = False, dtype=torch.float32) -> SampleResult:
    """High-level entry: latents from per-sample seeds, then the chosen sampler.

    sampler: 'euler' | 'heun' (deterministic) | 'stochastic' (Alg. 2 with Heun steps)."""
    return next(generate_batches(
        denoiser, shape, [seeds], device=device, sampler=sampler, num_steps=num_steps, discretization=discretization,
        sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax,
        S_noise=S_noise, class_labels=class_labels, return_trajectory=return_trajectory, dtype=dtype))


def generate_batches(denoiser, shape, seed_batches: Iterable[Sequence[int]], *, device="cpu",
                     **kw) -> Iterator[SampleResult]:
    """generate(denoiser, shape, seeds, device=device, **kw) for each list of seeds in turn (each sample's
    latents come from its own seed, so the samples do not depend on the batching). The schedule is clamped
    to the denoiser's trained noise range (trained_range)."""
    kw.update(trained_range(denoiser, kw.get("discretization", "edm"), kw.get("sigma_min"), kw.get("sigma_max")))
    run, _ = _sampler_call(**kw)
    for seeds in seed_batches:
        noise = SeededNoise(device, seeds)
        yield run(denoiser, noise.randn((len(seeds), *shape)), noise)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8 (EDM's rounding)."""
    x = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    if x.ndim == 4:
        x = x.permute(0, 2, 3, 1)
    return x.cpu().numpy()
