"""Stateless seeding: every random draw of training step k comes from a seed derived from
(run seed, purpose, k). Resuming at step k therefore needs no saved RNG state and reproduces an
uninterrupted run bit for bit."""
from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and platforms)."""
    words = []
    for k in keys:
        if isinstance(k, str):
            words.extend(k.encode())
        else:
            words.append(int(k) & 0xFFFFFFFF)
            words.append((int(k) >> 32) & 0xFFFFFFFF)
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(device, *keys) -> torch.Generator:
    return torch.Generator(device=torch.device(device)).manual_seed(derive_seed(*keys))
