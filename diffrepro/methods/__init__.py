"""Methods are switches on the EDM training core. `build_objective` turns a method entry of
params.yaml into a DenoisingLoss: a sigma distribution, an optional loss mask (sparse supervision)
and an optional replaced target (Stable Target Field). Adding a method touches its own module here
plus its params entry."""
from __future__ import annotations

import torch

from ..loss import DenoisingLoss
from ..sigma_dist import DEFAULT_SIGMA_DIST, LogNormal, LogUniform, SigmaDistribution, VPTraining


def build_sigma_dist(spec: dict, total_steps: int | None = None) -> SigmaDistribution:
    """`total_steps` (the run's length) is accepted for callers that pass it; no distribution depends on it
    (InfoNoise counts its warm-up and refresh in training images)."""
    kw = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind == "lognormal":
        return LogNormal(**kw)
    if kind == "vp":
        return VPTraining(**kw)
    if kind == "loguniform":
        return LogUniform(**kw)
    if kind == "infonoise":
        from .infonoise import InfoNoise
        return InfoNoise.from_spec(kw)          # warm-up and refresh in training images: no run length needed
    raise ValueError(f"unknown sigma distribution {kind!r}")


def build_objective(method: dict, train_data: torch.Tensor, total_steps: int | None = None,
                    sigma_data: float = 0.5, precond=None, augment_fn=None) -> DenoisingLoss:
    """`train_data` (float, on the training device) is what the reference batch of STF draws from;
    `augment_fn` (a training setting, not a method): augment.training_hook of the training entry."""
    sd_spec = method.get("sigma_dist") or DEFAULT_SIGMA_DIST[method["precond"]]
    sigma_dist = build_sigma_dist(sd_spec, total_steps)
    if hasattr(sigma_dist, "loss_weight_fn") and precond is not None:
        sigma_dist.loss_weight_fn = precond.loss_weight
    mask_fn = target_fn = None
    if method.get("mask"):
        from .sparse import build_mask_fn
        mask_fn = build_mask_fn(**method["mask"])
    if method.get("target"):
        from .stf import build_target_fn
        target_fn = build_target_fn(train_data, **{k: v for k, v in method["target"].items() if k != "kind"})
    return DenoisingLoss(sigma_dist, target_fn=target_fn, mask_fn=mask_fn, augment_fn=augment_fn)
