"""Saving and loading trained denoisers as state dicts plus a config (never pickled code)."""
from __future__ import annotations

from pathlib import Path

import torch

from .io import atomic_torch_save
from .nets import build_network
from .precond import build_precond

# the label size of EDM's CIFAR-10 augmentation (augment.EDM_CIFAR10.label_dim), kept here so that loading a
# model does not import the augmentation code (the stages that only load models do not depend on it)
AUGMENT_DIM = 9


def network_config(training: dict, data_shape) -> dict:
    """data_shape: (C, H, W) for images or (D,) for vectors. A training entry with `augment: p > 0` (EDM's
    non-leaking augmentation) gets a network conditioned on the augmentation label (augment_dim)."""
    augment = float(training.get("augment") or 0)
    if len(data_shape) == 3:
        cfg = {"preset": training["network"], "channels": data_shape[0], "img_resolution": data_shape[1],
               **training.get("network_kw", {})}
        if augment > 0:
            cfg["augment_dim"] = AUGMENT_DIM
        return cfg
    if augment > 0:
        raise ValueError(f"training {training.get('name', '')!r}: augment: {augment:g} needs image data "
                         f"(the augmentation is geometric); this dataset has vectors of shape {tuple(data_shape)}")
    return {"preset": training["network"], "channels": data_shape[0], **training.get("network_kw", {})}


def build_denoiser(net_cfg: dict, precond: str, method: dict | None = None):
    """The network under its preconditioning; with the run's method spec, the preconditioning carries the
    noise range the method trains on (sigma_dist.trained_sigma_range), which samplers clamp to. Loading a
    model needs no method code: only the sigma distribution's range."""
    from .sigma_dist import trained_sigma_range

    cfg = dict(net_cfg)
    preset = cfg.pop("preset")
    kw = trained_sigma_range(method) if method else {}
    return build_precond(precond, build_network(preset, **cfg), **kw)


def save_model(path, *, ema_state: dict, net_cfg: dict, precond: str, spec: dict, extra: dict | None = None):
    atomic_torch_save({"format": "diffrepro-model-v1", "ema": ema_state, "network": net_cfg, "precond": precond,
                       "spec": spec, **(extra or {})}, path)


def load_model(path, device="cpu", snapshot: str | Path | None = None):
    """Returns (denoiser in eval mode, the saved record). `snapshot` loads a checkpoint's EMA weights instead."""
    rec = torch.load(path, map_location="cpu", weights_only=False)
    if rec.get("format") != "diffrepro-model-v1":
        raise ValueError(f"{path} is not a diffrepro model file")
    D = build_denoiser(rec["network"], rec["precond"], (rec.get("spec") or {}).get("method"))
    state = rec["ema"] if snapshot is None else torch.load(snapshot, map_location="cpu", weights_only=False)["ema"]
    # EMA state dicts belong to the Preconditioning wrapper (keys 'net.*')
    D.load_state_dict(state)
    return D.to(device).eval().requires_grad_(False), rec
