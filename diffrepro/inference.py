"""The denoiser the samplers call: on a GPU, bf16 autocast around the raw network and torch.compile, the
preconditioning and the sampler's arithmetic staying in full precision; elsewhere, or when asked for fp32, the
model as it is.

Sampling uses none of the speed paths of diffrepro.fast (SAMPLING_PATHS is empty): measured on one H100
(benchmarks/RESULTS.md), the `small` U-Net's Heun-18 sampling at the stage's batch of 1,000 ran at 0.62x the
plain compiled network's speed with every path on and 0.95x with channels_last alone. They stay on for
training, where they gain (1.17x on `small` with CUDA graphs, 1.56x on DDPM++)."""
from __future__ import annotations

import torch

from . import fast

SAMPLING_PATHS: tuple[str, ...] = ()


def for_sampling(denoiser, device, *, fp32: bool = False, compile: bool = True, compile_mode: str | None = None):
    """(the denoiser to sample with, a word for what it runs: 'bf16+compile', 'bf16' or 'fp32'; '+fast' is
    added if SAMPLING_PATHS names a speed path). `denoiser`: a Preconditioning with its weights loaded, on
    `device`; changed in place on a GPU."""
    if fp32 or torch.device(device).type != "cuda" or not fast.enabled():
        return denoiser, "fp32"
    fast.make_fast(denoiser, paths=SAMPLING_PATHS, precision="bf16", compile=compile, compile_mode=compile_mode)
    return denoiser, "bf16" + ("+fast" if SAMPLING_PATHS else "") + ("+compile" if compile else "")
