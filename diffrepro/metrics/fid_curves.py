"""FID over training: the budget T a pilot curve fixes, and the steps a run needs to reach a target FID
(methods.md section 6: budget T; claim I1).

Budget T. A pilot run (EDM, full training set) is evaluated at checkpoints s_1 < ... < s_K (10k-sample
FID every 5% of a long run). T is the first checkpoint s such that a run stopped at s would have seen
its FID change by less than `tol` (5%) over its last quarter: with the FID curve f interpolated
linearly between checkpoints,

    (max f - min f over [(1 - window) s, s]) / f(s) < tol,       window = 1/4.

Checkpoints before the first one at which the window is covered by measurements (s_1 <= (1 - window) s)
are not candidates. No such s: the pilot has not converged and T stays unknown (None).

Steps to a target. The first crossing of `target` by the curve, linearly interpolated between the
last checkpoint above the target and the first one at or below it; a curve whose first checkpoint is
already at or below the target reaches it at that checkpoint (the resolution of the grid). Never
reached: inf.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["budget_from_curve", "steps_to_target"]


def _curve(steps: Sequence[float], values: Sequence[float]):
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if s.shape != v.shape or s.ndim != 1:
        raise ValueError("steps and values must be 1-D sequences of the same length")
    order = np.argsort(s)
    s, v = s[order], v[order]
    if np.any(np.diff(s) == 0):
        raise ValueError("steps must be distinct (average repeated evaluations first)")
    ok = np.isfinite(v)
    return s[ok], v[ok]


def budget_from_curve(steps: Sequence[float], fid: Sequence[float], tol: float = 0.05,
                      window: float = 0.25) -> Optional[float]:
    """The budget T (in the units of `steps`) a pilot FID curve fixes, or None (module docstring)."""
    s, f = _curve(steps, fid)
    if len(s) < 2:
        return None
    for k in range(len(s)):
        end = s[k]
        start = (1.0 - window) * end
        if start < s[0]:
            continue
        inside = (s > start) & (s <= end)
        vals = np.concatenate([[np.interp(start, s, f)], f[inside]])
        if (vals.max() - vals.min()) / f[k] < tol:
            return float(end)
    return None


def steps_to_target(steps: Sequence[float], fid: Sequence[float], target: float) -> float:
    """Training steps at which the curve first reaches `target` (interpolated; inf if never)."""
    s, f = _curve(steps, fid)
    hit = np.nonzero(f <= target)[0]
    if not len(hit):
        return math.inf
    k = int(hit[0])
    if k == 0:
        return float(s[0])
    s0, s1, f0, f1 = s[k - 1], s[k], f[k - 1], f[k]
    return float(s0 + (f0 - target) / (f0 - f1) * (s1 - s0))
