"""Sampler error against a fine reference on the same latents (methods.md section 6, claim E1).

One trained model, one set of latents (sample k starts from seed k for every sampler), sampled by the
sampler under test at several step counts and by a reference solver fine enough to stand for the exact
probability-flow ODE (Heun with 256 steps). Two measurements:

  * NFE to the reference FID: the NFE from which a sampler's FID stays within `tol` (2%) of the
    reference FID. Along the sampler's NFE grid (sorted), take the first point after which every point
    is within tol; between it and the point before, interpolate linearly in ln(NFE) where the relative
    error |FID - FID_ref| / FID_ref crosses tol. A sweep that ends outside the tolerance gives inf; one
    that starts inside gives its smallest NFE (the grid's resolution).
    Undertrained models can score a *better* FID with a coarse sampler than with the exact ODE (the
    discretization error happens to help), which is why the distance to the reference, not the lowest
    FID, decides.
  * Per-sample RMSE to the reference images: sqrt(mean over pixels of (x - x_ref)^2) per sample, on the
    [-1, 1] scale (uint8 images are mapped by (v - 127.5) / 127.5), then averaged over samples. It
    measures the solver's truncation error directly, free of FID's sampling noise.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["nfe_to_reference", "per_sample_rmse"]


def nfe_to_reference(nfe: Sequence[float], fid: Sequence[float], reference_fid: float, tol: float = 0.02) -> float:
    """NFE from which the FID stays within tol (relative) of the reference FID (module docstring)."""
    n, f = np.asarray(nfe, dtype=np.float64), np.asarray(fid, dtype=np.float64)
    order = np.argsort(n)
    n, f = n[order], f[order]
    if not len(n) or reference_fid <= 0:
        raise ValueError("need at least one (NFE, FID) point and a positive reference FID")
    err = np.abs(f - reference_fid) / reference_fid
    outside = np.nonzero(err > tol)[0]
    if not len(outside):
        return float(n[0])
    k = int(outside[-1])
    if k == len(n) - 1:
        return math.inf
    # err[k] > tol >= err[k + 1]: crossing between n[k] and n[k + 1], linear in ln(NFE)
    t = (err[k] - tol) / (err[k] - err[k + 1])
    return float(math.exp(math.log(n[k]) + t * (math.log(n[k + 1]) - math.log(n[k]))))


def _model_space(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return (x.astype(np.float64) - 127.5) / 127.5
    return x.astype(np.float64)


def per_sample_rmse(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """RMSE of each sample to the reference sample of the same latent (arrays of the same shape, sample
    k of both from seed k), on the [-1, 1] scale."""
    a, b = _model_space(samples), _model_space(reference)
    if a.shape != b.shape:
        raise ValueError(f"samples {a.shape} and reference {b.shape} differ in shape: same latents needed")
    return np.sqrt(((a - b) ** 2).reshape(len(a), -1).mean(1))
