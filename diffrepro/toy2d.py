"""Seeded 2D toy datasets, scaled so each coordinate has std close to sigma_data = 0.5."""
from __future__ import annotations

import math

import numpy as np


def gaussian_mixture(n: int, seed: int = 0, modes: int = 8, radius: float = 0.7, std: float = 0.06) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, modes, n)
    angles = 2 * math.pi * k / modes
    centers = np.stack([np.cos(angles), np.sin(angles)], 1) * radius
    return (centers + rng.normal(0, std, (n, 2))).astype(np.float32)


def two_points(n: int = 2, seed: int = 0, separation: float = 1.0) -> np.ndarray:
    """Two Diracs at (+-separation/2, 0) (EDM's curvature figure); n points alternate between them."""
    pts = np.array([[-separation / 2, 0.0], [separation / 2, 0.0]], dtype=np.float32)
    return pts[np.arange(n) % 2]


def ring(n: int, seed: int = 0, radius: float = 0.7, std: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 2 * math.pi, n)
    r = radius + rng.normal(0, std, n)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1).astype(np.float32)


def swiss_roll(n: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = 1.5 * math.pi * (1 + 2 * rng.uniform(0, 1, n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 14.0
    return (x + rng.normal(0, noise, (n, 2))).astype(np.float32)


TOY_DATASETS = {"gmm": gaussian_mixture, "two_points": two_points, "ring": ring, "swiss_roll": swiss_roll}


def make_toy(name: str, n: int, seed: int = 0, **kwargs) -> np.ndarray:
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, seed=seed, **kwargs)
