"""The denoiser the samplers call: on a GPU, the fast path (bf16 autocast around the raw network, the speed
paths of diffrepro.fast, torch.compile), the preconditioning and the sampler's arithmetic staying in full
precision; elsewhere, or when asked for fp32, the model as it is."""
from __future__ import annotations

import torch

from . import fast


def for_sampling(denoiser, device, *, fp32: bool = False, compile: bool = True, compile_mode: str | None = None):
    """(the denoiser to sample with, a word for what it runs: 'bf16+fast+compile', 'bf16+fast' or 'fp32').
    `denoiser`: a Preconditioning with its weights loaded, on `device`; changed in place on the fast path."""
    if fp32 or torch.device(device).type != "cuda" or not fast.enabled():
        return denoiser, "fp32"
    fast.make_fast(denoiser, precision="bf16", compile=compile, compile_mode=compile_mode)
    return denoiser, "bf16+fast" + ("+compile" if compile else "")
