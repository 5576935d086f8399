"""Seed statistics and interval verdicts of the claims table (methods.md section 6).

Per arm (one configuration trained with several seeds): the seed mean and a 95% interval from
Student's t with n - 1 degrees of freedom. A comparison of two arms gets the interval of the
difference of their means (Welch: unequal variances, Welch-Satterthwaite degrees of freedom) or of
the ratio of their means (a bootstrap over seeds, each arm resampled on its own, seeded, percentile
interval). A verdict reads the interval of the compared quantity against the paper's side:

    agrees        the interval lies on the paper's side of the reference (0 for a difference, 1 for a
                  ratio; for "stays competitive" claims: below the stated margin);
    disagrees     the interval lies on the other side (for "stays competitive" claims: it excludes the
                  margin, i.e. lies wholly above it);
    inconclusive  otherwise, with the reason.

A row decides only when every arm has the seeds section 6 asks for (3; 2 for the memorization sweep)
and every run was trained to the budget T; otherwise its verdict is "inconclusive" and the reason says
which requirement failed ("n = 1 < 3", "not trained to the budget T"). The numbers are still shown.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy import stats as _st

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
LEVEL = 0.95
MIN_SEEDS = 3                # per arm (methods.md section 6)
MIN_SEEDS_MEMORIZATION = 2   # the memorization sweep (block B)
N_BOOT = 4000


@dataclass(frozen=True)
class Arm:
    """One arm's per-seed values and their 95% t interval (nan bounds with fewer than 2 seeds)."""
    name: str
    values: tuple
    mean: float
    lo: float
    hi: float

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    def text(self, fmt: str = ".3g") -> str:
        """`24.2 [21.0, 27.4] (n=3)`, or `24.2 (n=1)` without an interval."""
        if self.n < 2 or not np.isfinite([self.lo, self.hi]).all():
            return f"{self.mean:{fmt}} (n={self.n})"
        return f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}] (n={self.n})"


@dataclass(frozen=True)
class Interval:
    """A compared quantity (difference or ratio of arm means) with its 95% interval."""
    kind: str                 # "difference" | "ratio" | any label
    estimate: float
    lo: float
    hi: float
    method: str = ""          # "Welch t, 3.2 dof", "bootstrap over seeds", ...

    def text(self, fmt: str = ".3g") -> str:
        if math.isnan(self.estimate):
            return self.kind + (f" ({self.method})" if self.method else "")
        if not np.isfinite([self.lo, self.hi]).all() and not (math.isinf(self.lo) or math.isinf(self.hi)):
            return f"{self.kind} {self.estimate:{fmt}} (no interval)"
        return f"{self.kind} {self.estimate:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile with n - 1 degrees of freedom (n = 2: 12.706)."""
    return float(_st.t.ppf(0.5 + level / 2, n - 1))


def arm(name: str, values: Iterable[float], level: float = LEVEL) -> Arm:
    """Seed mean and t interval of one arm (`values`: one number per seed)."""
    v = tuple(float(x) for x in values)
    if not v:
        raise ValueError(f"arm {name!r} has no values")
    m = float(np.mean(v))
    if len(v) < 2 or not np.isfinite(v).all():       # an infinite value (never reached): no t interval
        return Arm(name, v, m, math.nan, math.nan)
    half = t_quantile(len(v), level) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return Arm(name, v, m, m - half, m + half)


def welch_difference(a: Arm, b: Arm, level: float = LEVEL) -> Interval:
    """mean(a) - mean(b) with Welch's interval; nan bounds when an arm has fewer than 2 seeds. Two arms
    without any spread give a zero-width interval (their difference is exact)."""
    d = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Interval("difference", d, math.nan, math.nan, "needs >= 2 seeds per arm")
    va, vb = np.var(a.values, ddof=1) / a.n, np.var(b.values, ddof=1) / b.n
    se2 = va + vb
    if se2 == 0:
        return Interval("difference", d, d, d, "no seed spread")
    dof = se2 ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = float(_st.t.ppf(0.5 + level / 2, dof)) * math.sqrt(se2)
    return Interval("difference", d, d - half, d + half, f"Welch t, {dof:.1f} dof")


def bootstrap_ratio(a: Arm, b: Arm, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """mean(a) / mean(b) with a percentile bootstrap over seeds: each arm's seeds are resampled with
    replacement on their own (seeded), the ratio of the resampled means is taken n_boot times. With a
    single seed in an arm the interval is nan."""
    est = a.mean / b.mean if b.mean != 0 else math.inf
    if a.n < 2 or b.n < 2:
        return Interval("ratio", est, math.nan, math.nan, "needs >= 2 seeds per arm")
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(a.values), np.asarray(b.values)
    ma = va[rng.integers(0, a.n, (n_boot, a.n))].mean(1)
    mb = vb[rng.integers(0, b.n, (n_boot, b.n))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(mb != 0, ma / mb, np.inf)
    lo, hi = np.quantile(r, [0.5 - level / 2, 0.5 + level / 2], method="linear")
    return Interval("ratio", est, float(lo), float(hi), f"bootstrap over seeds, {n_boot} resamples")


def side_verdict(iv: Interval, paper_side: str, reference: float) -> str:
    """agrees / disagrees / inconclusive from where the interval lies relative to `reference`:
    paper_side '<' means the paper expects the quantity below the reference, '>' above."""
    lo, hi = iv.lo, iv.hi
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    below, above = hi < reference, lo > reference
    if paper_side == "<":
        return AGREES if below else DISAGREES if above else INCONCLUSIVE
    if paper_side == ">":
        return AGREES if above else DISAGREES if below else INCONCLUSIVE
    raise ValueError(f"paper_side must be '<' or '>', got {paper_side!r}")


def competitive_verdict(iv: Interval, margin: float) -> str:
    """"Stays competitive" claims (ratio to the baseline under `margin`): agrees when the whole interval
    is under the margin, disagrees when it excludes the margin from above (lies wholly over it)."""
    if math.isnan(iv.lo) or math.isnan(iv.hi):
        return INCONCLUSIVE
    if iv.hi < margin:
        return AGREES
    if iv.lo > margin:
        return DISAGREES
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from several comparisons that must all hold (e.g. EDM beats VP *and* VE): agrees if
    all agree, disagrees if any disagrees, else inconclusive."""
    if verdicts and all(v == AGREES for v in verdicts):
        return AGREES
    if any(v == DISAGREES for v in verdicts):
        return DISAGREES
    return INCONCLUSIVE


def seed_shortfall(arms: Sequence[Arm], required: int = MIN_SEEDS) -> Optional[str]:
    """'n = 1 < 3 (vp, ve); n = 2 < 3 (edm)' if some arms have fewer seeds than required, else None."""
    short = [a for a in arms if a.n < required]
    if not short:
        return None
    by_n = {}
    for a in short:
        by_n.setdefault(a.n, []).append(a.name)
    return "; ".join(f"n = {n} < {required} ({', '.join(names)})" for n, names in sorted(by_n.items()))


def gate(verdict: str, arms: Sequence[Arm], required: int = MIN_SEEDS,
         budget_reason: Optional[str] = None) -> tuple[str, list]:
    """The verdict a row may show: `verdict` if every arm has `required` seeds and budget_reason is None,
    else inconclusive. Returns (verdict, reasons that blocked it)."""
    reasons = [r for r in (seed_shortfall(arms, required), budget_reason) if r]
    return (INCONCLUSIVE if reasons else verdict), reasons


__all__ = ["Arm", "Interval", "arm", "t_quantile", "welch_difference", "bootstrap_ratio", "side_verdict",
           "competitive_verdict", "combine", "seed_shortfall", "gate", "AGREES", "DISAGREES", "INCONCLUSIVE",
           "MIN_SEEDS", "MIN_SEEDS_MEMORIZATION", "LEVEL"]
