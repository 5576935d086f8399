"""Sparse supervision (Zhao et al. 2026, arXiv 2602.02699): a fresh random binary mask per sample
and step removes a fraction eta (`ratio`) of pixels from the regression loss; the input is not
masked and the rest of training is unchanged.

`build_mask_fn` returns the `mask_fn(shape, generator) -> (mask, keep)` hook of DenoisingLoss, which
computes  loss = lambda(sigma) * (D - y)^2 * mask / keep.
  kind       'pixel'   one Bernoulli(1 - eta) draw per pixel, shared across channels   [ours, default]
             'element' one draw per element (pixel x channel)
             'patch'   one draw per k x k patch of a grid anchored at the top-left corner, shared
                       across channels; when k does not divide H or W the last row/column of patches
                       is cropped at the image border (each pixel still has keep probability 1 - eta)
  normalize  'unbiased' keep = 1 - eta, so E_mask[masked loss] = full loss                [ours, default]
             'kept'     keep = per-sample fraction of kept elements, shape (B, 1, ..., 1): the mean over
                        kept elements, scaled to the full loss's sum over pixels. A sample with no
                        kept element gets keep = 1 and thus zero loss (not 0/0). With U equal-size
                        mask units per sample this gives E = (1 - eta^U) * full loss (slightly biased
                        low; cropped border patches break even that).
All randomness comes from `generator` (the training step's generator, on the data's device), so
runs stay bit-reproducible and resumable. ratio = 0 draws nothing and returns (ones, 1.0): exactly
the baseline loss and gradients.

The analysis helpers check the paper's identity for an i.i.d. mask m with keep probability
p = 1 - eta applied to data x (no 1/p rescaling). With S = E[x x^T] the second moment,
    E[(m*x)(m*x)^T] = p^2 S + eta p diag(S)      (E[m_i m_j] = p^2 for i != j, p for i = j).
For centred data S is the covariance Sigma, and this is the paper's
    Sigma~ = (1 - eta)^2 Sigma + eta (1 - eta) diag(Sigma):
covariances shrink by (1 - eta)^2 but variances only by (1 - eta), so correlations shrink by (1 - eta).
(For uncentred data the masked *covariance* carries an extra eta p diag(mu^2) term; we do not use it.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch

KINDS = ("pixel", "element", "patch")
NORMALIZATIONS = ("unbiased", "kept")
PAPER_MAX_RATIO = 0.98     # the largest eta the paper tests; larger values are allowed


@dataclass(frozen=True)
class SparseMask:
    """The mask_fn hook of DenoisingLoss for sparse supervision (see the module docstring)."""
    ratio: float = 0.0              # eta, the fraction of pixels removed from the loss
    kind: str = "pixel"
    patch_size: int = 4
    normalize: str = "unbiased"

    def __call__(self, shape: torch.Size, generator: torch.Generator
                 ) -> tuple[torch.Tensor, Union[float, torch.Tensor]]:
        shape = torch.Size(shape)
        device = generator.device
        if self.ratio == 0:
            return torch.ones(shape, device=device), 1.0
        mask = self.draw(shape, generator)
        if self.normalize == "unbiased":
            return mask, 1.0 - self.ratio
        keep = mask.flatten(1).mean(1)
        keep = torch.where(keep > 0, keep, torch.ones_like(keep))   # no kept element: mask is 0, loss 0
        return mask, keep.reshape(-1, *([1] * (len(shape) - 1)))

    def draw(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """A float32 {0, 1} mask of `shape`, each unit kept with probability 1 - ratio."""
        if len(shape) < 2:
            raise ValueError(f"mask shape must be (B, ...), got {tuple(shape)}")
        if self.kind == "element" or len(shape) == 2:
            # vectors (B, D): every coordinate is its own pixel for 'pixel' too
            if self.kind == "patch":
                raise ValueError(f"patch masks need images (B, C, H, W), got shape {tuple(shape)}")
            return self._bernoulli(shape, generator)
        if len(shape) != 4:
            raise ValueError(f"'{self.kind}' masks need images (B, C, H, W) or vectors (B, D), got {tuple(shape)}")
        B, C, H, W = shape
        if self.kind == "pixel":
            return self._bernoulli((B, 1, H, W), generator).expand(shape).contiguous()
        k = self.patch_size
        grid = self._bernoulli((B, 1, math.ceil(H / k), math.ceil(W / k)), generator)
        mask = grid.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)[:, :, :H, :W]  # crop the grid
        return mask.expand(shape).contiguous()

    def _bernoulli(self, shape, generator) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=generator.device)
        return (u >= self.ratio).to(torch.float32)     # P(u >= eta) = 1 - eta


def build_mask_fn(ratio: float, kind: str = "pixel", patch_size: int = 4,
                  normalize: str = "unbiased") -> SparseMask:
    """The `mask_fn` for DenoisingLoss from the params entry `mask: {ratio, kind, patch_size, normalize}`."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise ValueError(f"mask ratio must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio (eta, the fraction of pixels removed) must be in [0, 1), got {ratio}; "
                         f"the paper goes up to {PAPER_MAX_RATIO}")
    if kind not in KINDS:
        raise ValueError(f"unknown mask kind {kind!r}: use one of {KINDS}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be an integer >= 1, got {patch_size!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown mask normalization {normalize!r}: use one of {NORMALIZATIONS}")
    return SparseMask(ratio=float(ratio), kind=kind, patch_size=patch_size, normalize=normalize)


# --- analysis: the masked-data second moment -------------------------------------------------------

def predicted_masked_covariance(sigma: torch.Tensor, eta: float) -> torch.Tensor:
    """Sigma~ = (1 - eta)^2 Sigma + eta (1 - eta) diag(Sigma) for an i.i.d. keep-(1 - eta) mask.
    `sigma` is the second moment E[x x^T] (= the covariance for centred data), (D, D)."""
    p = 1.0 - eta
    return p * p * sigma + eta * p * torch.diag(torch.diagonal(sigma))


def masked_covariance(x: torch.Tensor, eta: float, n_masks: int = 1,
                      generator: Optional[torch.Generator] = None, center: bool = True,
                      chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical second moments of data x (N, D) before and after masking, in float64.

    With center=True, x is first centred by its own mean. Returns (S, S_masked) with
      S        = (1/N) sum_n x_n x_n^T,
      S_masked = (1/(N n_masks)) sum_n sum_k (m_nk * x_n)(m_nk * x_n)^T,
    m_nk i.i.d. Bernoulli(1 - eta) per coordinate, drawn from `generator`, no 1/(1 - eta) rescaling.
    Conditional on x, E_mask[S_masked] = predicted_masked_covariance(S, eta) exactly."""
    if not 0.0 <= eta < 1.0:
        raise ValueError(f"eta must be in [0, 1), got {eta}")
    if x.ndim != 2:
        raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(0)
    x = x.to(torch.float64)
    if center:
        x = x - x.mean(0, keepdim=True)
    n, d = x.shape
    S = x.T @ x / n
    S_masked = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for _ in range(n_masks):
        for i in range(0, n, chunk):
            xc = x[i:i + chunk]
            m = torch.rand(xc.shape, generator=generator, device=x.device) >= eta
            xm = xc * m
            S_masked += xm.T @ xm
    return S, S_masked / (n * n_masks)


def masked_covariance_mask_variance(x: torch.Tensor, eta: float, n_masks: int = 1,
                                    center: bool = True) -> torch.Tensor:
    """Var over masks of each entry of S_masked given x (same conventions as masked_covariance):
      Var(m_i m_j) = p^2 (1 - p^2) for i != j, p (1 - p) for i == j, p = 1 - eta,
      Var(S_masked_ij | x) = Var(m_i m_j) * sum_n x_ni^2 x_nj^2 / (N^2 n_masks).
    Summed over entries it is E||S_masked - E S_masked||_F^2, the test's tolerance scale."""
    x = x.to(torch.float64)
    if center:
        x = x - x.mean(0, keepdim=True)
    n = x.shape[0]
    p = 1.0 - eta
    x2 = x * x
    fourth = x2.T @ x2
    var_m = torch.full_like(fourth, p * p * (1 - p * p))
    var_m.diagonal().fill_(p * (1 - p))
    return var_m * fourth / (n * n * n_masks)
