"""A set of samples from a trained denoiser, as the sample and analysis stages store them.

Sample k always starts from seed k (one generator per sample), so a set does not depend on the batch
size or the device count, and every run is compared on the same latents.
"""
from __future__ import annotations

import numpy as np
import torch


def draw_samples(denoiser, shape, num_samples: int, sampling: dict, device, batch_size: int,
                 progress: bool = False):
    """(samples, NFE per sample): uint8 NHWC for images, float32 (N, D) for vectors. `sampling` holds the
    sampler's settings (a `sampling.<name>` entry of params.yaml; its `name` is ignored)."""
    from tqdm.auto import tqdm

    from .samplers import generate_batches, to_uint8

    kw = {k: v for k, v in sampling.items() if k != "name"}
    # every batch has the same shape (compiled graphs are reused): the last is padded with seeds past the end
    seed_batches = [list(range(start, start + batch_size)) for start in range(0, num_samples, batch_size)]
    chunks, nfe = [], 0
    bar = tqdm(total=num_samples, desc="sample", unit="img", disable=not progress, mininterval=5)
    with torch.no_grad():
        for seeds, res in zip(seed_batches, generate_batches(denoiser, shape, seed_batches, device=device, **kw)):
            x = res.samples[:num_samples - seeds[0]]
            chunks.append(to_uint8(x) if len(shape) == 3 else x.float().cpu().numpy())
            nfe = res.nfe
            bar.update(len(x))
    bar.close()
    return np.concatenate(chunks), nfe
