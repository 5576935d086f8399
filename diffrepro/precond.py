"""Preconditioning of EDM Table 1: wrap a raw network F into a denoiser D(x; sigma).

D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x; c_noise(sigma))

One class per column of the table (VP, VE, EDM). Each also carries the schedule sigma(t), its
inverse, the scaling s(t) and the loss weight lambda(sigma), so samplers and losses read the
whole column from one place.
"""
from __future__ import annotations

import torch
from torch import nn

SIGMA_DATA = 0.5


def _as_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """Broadcastable sigma of shape (B, 1, ..., 1) in float32 (or float64 if x is)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if isinstance(sigma, (int, float)):
        # a number becomes a device tensor by a fill: a copy from host memory would make the host wait
        # for the device at every call, and the GPU idle while the host queues the next call's kernels
        return torch.full((x.shape[0], *([1] * (x.ndim - 1))), float(sigma), dtype=dtype, device=x.device)
    sigma = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class Preconditioning(nn.Module):
    """Base: subclasses define the coefficient functions; `forward` is the denoiser D.

    sigma_min, sigma_max: the noise levels the network was trained on (VE: its log-uniform range; VP:
    sigma(epsilon_t) to sigma(1); EDM: its sampling range, the log-normal being unbounded). Samplers clamp
    their schedules to it (samplers.trained_range; EDM's generate.py does the same): a network is never
    queried at a noise level it has not seen."""

    name = "base"
    sigma_min: float
    sigma_max: float

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        # a network conditioned on augmentation labels (EDM's non-leaking augmentation) is queried with the
        # label zeroed whenever none is given: "no augmentation", the distribution samples are drawn from
        self.augment_dim = int(getattr(net, "augment_dim", 0) or 0)

    # --- Table 1 rows (all take and return tensors of sigma) ---
    def c_skip(self, sigma):
        raise NotImplementedError

    def c_out(self, sigma):
        raise NotImplementedError

    def c_in(self, sigma):
        raise NotImplementedError

    def c_noise(self, sigma):
        raise NotImplementedError

    def loss_weight(self, sigma):
        """lambda(sigma)."""
        raise NotImplementedError

    # --- schedule sigma(t), s(t) used by the samplers ---
    def sigma(self, t):
        raise NotImplementedError

    def sigma_inv(self, sigma):
        raise NotImplementedError

    def sigma_deriv(self, t):
        raise NotImplementedError

    def s(self, t):
        return torch.ones_like(torch.as_tensor(t))

    def s_deriv(self, t):
        return torch.zeros_like(torch.as_tensor(t))

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)

    def forward(self, x: torch.Tensor, sigma, class_labels=None, augment_labels=None) -> torch.Tensor:
        """D(x; sigma). `augment_labels` (B, augment_dim): the augmentation conditioning of EDM's networks (a U-Net
        built with augment_dim > 0); left out, such a network gets zeros (no augmentation: sampling, analyses)."""
        sigma = _as_sigma(sigma, x)
        if augment_labels is None and self.augment_dim:
            augment_labels = torch.zeros(x.shape[0], self.augment_dim, dtype=torch.float32, device=x.device)
        # the dtype the network takes its input in: its own word for it (fast.AutocastNet), else its weights'
        net_dtype = getattr(self.net, "input_dtype", None) or next(self.net.parameters()).dtype
        x_in = (self.c_in(sigma) * x).to(net_dtype)
        c_noise = self.c_noise(sigma).flatten().to(torch.float32 if net_dtype != torch.float64 else net_dtype)
        aug = {} if augment_labels is None else {"augment_labels": augment_labels}
        F_x = self.net(x_in, c_noise, class_labels, **aug)
        return (self.c_skip(sigma) * x + self.c_out(sigma) * F_x.to(sigma.dtype)).to(x.dtype)


class VPPrecond(Preconditioning):
    """Variance preserving (Song et al. 2021), EDM Table 1 column 'VP'."""

    name = "vp"

    def __init__(self, net, sigma_data=SIGMA_DATA, beta_d=19.9, beta_min=0.1, M=1000,
                 epsilon_t=1e-5):
        super().__init__(net, sigma_data)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t
        self.sigma_min = float(self.sigma(torch.tensor(epsilon_t, dtype=torch.float64)))
        self.sigma_max = float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def c_skip(self, sigma):
        return torch.ones_like(sigma)

    def c_out(self, sigma):
        return -sigma

    def c_in(self, sigma):
        return 1 / (sigma ** 2 + 1).sqrt()

    def c_noise(self, sigma):
        return (self.M - 1) * self.sigma_inv(sigma)

    def loss_weight(self, sigma):
        return 1 / sigma ** 2

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def sigma_deriv(self, t):
        t = torch.as_tensor(t)
        return 0.5 * (self.beta_min + self.beta_d * t) * (self.sigma(t) + 1 / self.sigma(t))

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt()
                - self.beta_min) / self.beta_d

    def s(self, t):
        return 1 / (1 + self.sigma(t) ** 2).sqrt()

    def s_deriv(self, t):
        return -self.sigma(t) * self.sigma_deriv(t) * (self.s(t) ** 3)


class VEPrecond(Preconditioning):
    """Variance exploding (Song et al. 2021), EDM Table 1 column 'VE'."""

    name = "ve"

    def __init__(self, net, sigma_data=SIGMA_DATA, sigma_min=0.02, sigma_max=100.0):
        super().__init__(net, sigma_data)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def c_skip(self, sigma):
        return torch.ones_like(sigma)

    def c_out(self, sigma):
        return sigma

    def c_in(self, sigma):
        return torch.ones_like(sigma)

    def c_noise(self, sigma):
        return (0.5 * sigma).log()

    def loss_weight(self, sigma):
        return 1 / sigma ** 2

    def sigma(self, t):
        return torch.as_tensor(t).sqrt()

    def sigma_deriv(self, t):
        return 0.5 / torch.as_tensor(t).sqrt()

    def sigma_inv(self, sigma):
        return torch.as_tensor(sigma) ** 2


class EDMPrecond(Preconditioning):
    """EDM (Karras et al. 2022), Table 1 column 'ours'."""

    name = "edm"

    def __init__(self, net, sigma_data=SIGMA_DATA, sigma_min=0.002, sigma_max=80.0):
        super().__init__(net, sigma_data)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def c_skip(self, sigma):
        return self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)

    def c_out(self, sigma):
        return sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()

    def c_in(self, sigma):
        return 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()

    def c_noise(self, sigma):
        return sigma.log() / 4

    def loss_weight(self, sigma):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def sigma(self, t):
        return torch.as_tensor(t)

    def sigma_deriv(self, t):
        return torch.ones_like(torch.as_tensor(t))

    def sigma_inv(self, sigma):
        return torch.as_tensor(sigma)


PRECONDITIONINGS = {"vp": VPPrecond, "ve": VEPrecond, "edm": EDMPrecond}


def build_precond(kind: str, net: nn.Module, **kwargs) -> Preconditioning:
    try:
        cls = PRECONDITIONINGS[kind]
    except KeyError:
        raise ValueError(f"unknown preconditioning {kind!r}; choose one of {sorted(PRECONDITIONINGS)}")
    return cls(net, **kwargs)


def effective_target_scale(precond: Preconditioning, sigma) -> torch.Tensor:
    """Std of the network's effective training target F_target = (y - c_skip*(y+n)) / c_out
    for data of std sigma_data (EDM eq. 8); equals 1 for EDM preconditioning."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    sd = precond.sigma_data
    cs, co = precond.c_skip(sigma), precond.c_out(sigma)
    return (((1 - cs) * sd) ** 2 + (cs * sigma) ** 2).sqrt() / co.abs()


__all__ = ["Preconditioning", "VPPrecond", "VEPrecond", "EDMPrecond", "build_precond",
           "PRECONDITIONINGS", "SIGMA_DATA", "effective_target_scale"]
