"""The ideal denoiser of a finite dataset: the exact posterior mean E[y | y + sigma*n = x] when y is
uniform over the N training points and n ~ N(0, I):

    D*(x; sigma) = sum_i w_i y_i,   w = softmax_i(-||x - y_i||^2 / (2 sigma^2))

Computed in float64 with a streaming log-sum-exp over chunks of the dataset, so memory stays
bounded for large sets and the softmax never overflows. Exact distances ||x - y||^2 are
formed as ||x||^2 + ||y||^2 - 2 x.y in float64, whose cancellation error (about 1e-16 of the
norms) is far below any sigma^2 used in practice.
"""
from __future__ import annotations

import torch


class IdealDenoiser:
    """Callable with the denoiser signature D(x, sigma, class_labels=None)."""

    def __init__(self, data: torch.Tensor, chunk_size: int = 4096, dtype=torch.float64):
        self.shape = tuple(data.shape[1:])
        self.data = data.reshape(data.shape[0], -1).to(dtype)
        self.sq_norms = (self.data ** 2).sum(1)
        self.chunk_size = chunk_size
        self.dtype = dtype

    def log_weights(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """Unnormalised log w_i for every (query, training point); small problems only."""
        x = x.reshape(x.shape[0], -1).to(self.dtype)
        sigma = self._sigma(sigma, x)
        d2 = (x ** 2).sum(1, keepdim=True) + self.sq_norms[None] - 2 * x @ self.data.T
        return -d2.clamp_min(0) / (2 * sigma[:, None] ** 2)

    def _sigma(self, sigma, x):
        sigma = torch.as_tensor(sigma, dtype=self.dtype, device=x.device).flatten()
        return sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma

    def __call__(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        out_dtype = x.dtype
        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        sigma = self._sigma(sigma, xf)
        x_sq = (xf ** 2).sum(1, keepdim=True)
        run_max = torch.full((xf.shape[0], 1), -torch.inf, dtype=self.dtype, device=xf.device)
        run_sum = torch.zeros_like(run_max)
        run_mean = torch.zeros_like(xf)
        for start in range(0, self.data.shape[0], self.chunk_size):
            y = self.data[start:start + self.chunk_size]
            d2 = (x_sq + self.sq_norms[None, start:start + self.chunk_size] - 2 * xf @ y.T).clamp_min(0)
            logits = -d2 / (2 * sigma[:, None] ** 2)
            new_max = torch.maximum(run_max, logits.max(1, keepdim=True).values)
            scale = (run_max - new_max).exp()
            w = (logits - new_max).exp()
            run_mean = run_mean * scale + w @ y
            run_sum = run_sum * scale + w.sum(1, keepdim=True)
            run_max = new_max
        return (run_mean / run_sum).reshape(x.shape).to(out_dtype)


def gaussian_denoiser(mean: torch.Tensor, std: float):
    """Closed-form ideal denoiser of isotropic Gaussian data N(mean, std^2 I)."""
    def D(x, sigma, class_labels=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        m = mean.to(x.dtype).to(x.device)
        return m + std ** 2 / (std ** 2 + sigma ** 2) * (x - m)
    return D
