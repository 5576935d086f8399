"""Weighted denoising score matching (EDM eq. 2 with the weight lambda of Table 1).

    loss = lambda(sigma) * m * (D(y + n; sigma) - target)^2 / keep_fraction

returned per element. Three hooks let methods plug in without touching this file's logic:
  * `target_fn(y, x_noisy, sigma, generator)` replaces the target y (Stable Target Field);
  * `mask_fn(shape, generator)` returns a per-element mask and its normalizer (sparse supervision);
  * `augment_fn(y, generator, shard)` returns (augmented y, augmentation labels), drawn after sigma and the
    noise; the labels go to the network as `augment_labels` (EDM's non-leaking augmentation, augment.py).
The sigma distribution is a `SigmaDistribution` (EDM log-normal, VP, VE, InfoNoise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .precond import Preconditioning
from .sigma_dist import SigmaDistribution


@dataclass
class LossOutput:
    loss: torch.Tensor        # per element, (B, C, H, W) or (B, D)
    sigma: torch.Tensor       # (B,)
    mse: torch.Tensor         # unweighted per-sample MSE of D against the clean image y, per dimension, (B,)

    def reduce(self) -> torch.Tensor:
        """Sum over pixels, mean over the batch (as EDM does)."""
        return self.loss.flatten(1).sum(1).mean()


MaskFn = Callable[[torch.Size, torch.Generator], "tuple[torch.Tensor, float]"]
TargetFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
AugmentFn = Callable[[torch.Tensor, torch.Generator, tuple], "tuple[torch.Tensor, torch.Tensor]"]


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


class DenoisingLoss:
    def __init__(self, sigma_dist: SigmaDistribution, target_fn: Optional[TargetFn] = None,
                 mask_fn: Optional[MaskFn] = None, augment_fn: Optional[AugmentFn] = None):
        self.sigma_dist = sigma_dist
        self.target_fn = target_fn
        self.mask_fn = mask_fn
        self.augment_fn = augment_fn

    def __call__(self, denoiser: Preconditioning, y: torch.Tensor, generator: torch.Generator,
                 class_labels=None, sigma: Optional[torch.Tensor] = None,
                 noise: Optional[torch.Tensor] = None, shard: Optional[tuple] = None) -> LossOutput:
        """`shard=(rank, world)`: y is this rank's slice of a global batch world*len(y); every random
        draw is made at the global size and sliced, so all ranks draw alike (same generator state for
        the target and mask hooks) and together reproduce the single-process batch."""
        rank, world = shard or (0, 1)
        b = y.shape[0]
        part = slice(rank * b, (rank + 1) * b)
        if sigma is None:
            sigma = self.sigma_dist.sample(b * world, generator, y.device)[part]
        sigma = sigma.to(torch.float32)
        if noise is None:
            noise = torch.randn((b * world, *y.shape[1:]), generator=generator, device=y.device, dtype=y.dtype)[part]
        s = _bcast(sigma, y)
        augment_labels = None
        if self.augment_fn is not None:
            y, augment_labels = self.augment_fn(y, generator, (rank, world))
        x_noisy = y + noise * s
        target = y
        if self.target_fn is not None:
            with torch.no_grad():
                target = self.target_fn(y, x_noisy, sigma, generator)
        if augment_labels is None:
            D = denoiser(x_noisy, sigma, class_labels)
        else:
            D = denoiser(x_noisy, sigma, class_labels, augment_labels=augment_labels)
        sq = (D.float() - target.float()) ** 2
        weight = _bcast(denoiser.loss_weight(sigma), y)
        loss = weight * sq
        if self.mask_fn is not None:
            mask, keep = self.mask_fn(torch.Size((b * world, *y.shape[1:])), generator)
            if torch.is_tensor(keep) and keep.ndim:
                keep = keep[part]
            loss = loss * mask[part] / keep
        with torch.no_grad():
            mse = ((D.detach().float() - y.float()) ** 2).flatten(1).mean(1)
        return LossOutput(loss=loss, sigma=sigma, mse=mse)
