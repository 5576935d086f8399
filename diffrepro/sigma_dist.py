"""Training noise-level distributions p(sigma) behind one interface.

A distribution draws sigma for a batch and may learn from the losses it sees (`observe`); its
state travels in checkpoints (`state_dict` / `load_state_dict`). InfoNoise implements the same
interface with an adaptive density.
"""
from __future__ import annotations

import math

import torch


class SigmaDistribution:
    name = "base"

    def sample(self, n: int, generator: torch.Generator, device=None) -> torch.Tensor:
        raise NotImplementedError

    def observe(self, sigma: torch.Tensor, mse: torch.Tensor, step: int) -> None:
        """Unweighted per-sample MSE at the drawn sigma; fixed distributions ignore it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def log_density(self, sigma: torch.Tensor) -> torch.Tensor:
        """log p(ln sigma), the density over ln(sigma) (used for plots)."""
        raise NotImplementedError


class LogNormal(SigmaDistribution):
    """EDM: ln(sigma) ~ N(P_mean, P_std^2)."""

    name = "lognormal"

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2):
        self.P_mean, self.P_std = P_mean, P_std

    def sample(self, n, generator, device=None):
        z = torch.randn(n, generator=generator, device=device or generator.device)
        return (z * self.P_std + self.P_mean).exp()

    def log_density(self, sigma):
        z = (torch.as_tensor(sigma).log() - self.P_mean) / self.P_std
        return -0.5 * z ** 2 - math.log(self.P_std * math.sqrt(2 * math.pi))


class VPTraining(SigmaDistribution):
    """VP: t ~ U(epsilon_t, 1), sigma = sigma_VP(t)."""

    name = "vp"

    def __init__(self, beta_d=19.9, beta_min=0.1, epsilon_t=1e-5):
        self.beta_d, self.beta_min, self.epsilon_t = beta_d, beta_min, epsilon_t

    def _sigma(self, t):
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def sample(self, n, generator, device=None):
        u = torch.rand(n, generator=generator, device=device or generator.device)
        return self._sigma(1 + u * (self.epsilon_t - 1))

    def log_density(self, sigma):
        # p(ln sigma) = p_t(t) |dt/d ln sigma|, p_t = 1/(1 - eps_t)
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        t = ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt()
             - self.beta_min) / self.beta_d
        dsig_dt = 0.5 * (self.beta_min + self.beta_d * t) * (sigma + 1 / sigma)
        dlnsig_dt = dsig_dt / sigma
        return -(dlnsig_dt.log()) - math.log(1 - self.epsilon_t)


class LogUniform(SigmaDistribution):
    """VE: ln(sigma) ~ U(ln sigma_min, ln sigma_max)."""

    name = "loguniform"

    def __init__(self, sigma_min=0.02, sigma_max=100.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def sample(self, n, generator, device=None):
        u = torch.rand(n, generator=generator, device=device or generator.device)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u

    def log_density(self, sigma):
        sigma = torch.as_tensor(sigma)
        inside = (sigma >= self.sigma_min) & (sigma <= self.sigma_max)
        value = -math.log(math.log(self.sigma_max / self.sigma_min))
        return torch.where(inside, torch.full_like(sigma, value), torch.full_like(sigma, -math.inf))


# A method's sigma distribution when its entry names none: the preconditioning's own (EDM Table 1)
DEFAULT_SIGMA_DIST = {"edm": {"kind": "lognormal"}, "vp": {"kind": "vp"}, "ve": {"kind": "loguniform"}}


def trained_sigma_range(method: dict) -> dict:
    """Preconditioning arguments that put the range of noise levels a method trains on onto the
    preconditioning object (precond.Preconditioning; samplers clamp to it): VE's log-uniform range, VP's
    epsilon_t. Empty for EDM (its log-normal is unbounded; EDMPrecond keeps EDM's sampling range)."""
    sd = method.get("sigma_dist") or DEFAULT_SIGMA_DIST[method["precond"]]
    if method["precond"] == "ve" and sd["kind"] == "loguniform":
        return {k: float(sd[k]) for k in ("sigma_min", "sigma_max") if k in sd}
    if method["precond"] == "vp" and sd["kind"] == "vp" and "epsilon_t" in sd:
        return {"epsilon_t": float(sd["epsilon_t"])}
    return {}
