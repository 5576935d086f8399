"""Seed statistics of the claims table against hand-computed intervals and scipy's Welch test."""
import math

import numpy as np
import pytest
from scipy import stats

from diffrepro.report.stats import (AGREES, DISAGREES, INCONCLUSIVE, Interval, arm, bootstrap_ratio, combine,
                                    competitive_verdict, gate, seed_shortfall, side_verdict, t_quantile,
                                    welch_difference)


def test_t_quantiles_are_the_tabulated_ones():
    assert t_quantile(2) == pytest.approx(12.706, abs=5e-4)     # 1 degree of freedom: not 2
    assert t_quantile(3) == pytest.approx(4.303, abs=5e-4)
    assert t_quantile(10) == pytest.approx(2.262, abs=5e-4)


def test_arm_interval_by_hand():
    a = arm("edm", [1.0, 2.0, 3.0])                 # mean 2, sd 1, se 1/sqrt(3), t(2 dof) 4.3027
    half = 4.302653 / math.sqrt(3)
    assert (a.n, a.mean) == (3, 2.0)
    assert a.lo == pytest.approx(2 - half, abs=1e-5) and a.hi == pytest.approx(2 + half, abs=1e-5)
    assert a.text() == "2 [-0.484, 4.48] (n=3)"


def test_two_seeds_use_one_degree_of_freedom():
    """The committed baseline's two seeds (21.3 and 23.9): the interval is mean +- 12.706 * 1.3."""
    a = arm("edm", [21.3, 23.9])
    assert a.mean == pytest.approx(22.6)
    assert a.lo == pytest.approx(22.6 - 12.7062 * 1.3, abs=1e-3)
    assert a.hi == pytest.approx(22.6 + 12.7062 * 1.3, abs=1e-3)
    one = arm("vp", [49.4])
    assert math.isnan(one.lo) and one.text() == "49.4 (n=1)"


def test_welch_matches_scipy_and_the_hand_formula():
    a, b = arm("a", [1.0, 2.0, 3.0]), arm("b", [4.0, 6.0, 8.0])
    d = welch_difference(a, b)
    dof = 50 / 17                                   # (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2)
    half = stats.t.ppf(0.975, dof) * math.sqrt(5 / 3)
    assert d.estimate == -4.0
    assert d.lo == pytest.approx(-4 - half, rel=1e-9) and d.hi == pytest.approx(-4 + half, rel=1e-9)
    ci = stats.ttest_ind(a.values, b.values, equal_var=False).confidence_interval(0.95)
    assert (d.lo, d.hi) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert "2.9 dof" in d.method
    assert math.isnan(welch_difference(a, arm("c", [5.0])).lo)
    exact = welch_difference(arm("x", [2.0, 2.0]), arm("y", [1.0, 1.0]))
    assert (exact.lo, exact.hi) == (1.0, 1.0)


def test_bootstrap_ratio_converges_to_the_enumerable_distribution():
    """a = (1, 3) resampled: mean 1 w.p. 1/4, 2 w.p. 1/2, 3 w.p. 1/4; b = (1, 1) is always 1, so the
    ratio's 2.5% and 97.5% percentiles are 1 and 3; the estimate is 2. Seeded: the same twice."""
    r = bootstrap_ratio(arm("a", [1.0, 3.0]), arm("b", [1.0, 1.0]))
    assert r.estimate == 2.0 and (r.lo, r.hi) == (1.0, 3.0)
    again = bootstrap_ratio(arm("a", [1.0, 3.0]), arm("b", [1.0, 1.0]))
    assert again == r
    constant = bootstrap_ratio(arm("a", [2.0, 2.0, 2.0]), arm("b", [4.0, 4.0, 4.0]))
    assert (constant.lo, constant.estimate, constant.hi) == (0.5, 0.5, 0.5)
    # a three-seed case: the percentile interval brackets the estimate and lies inside the resampled range
    r3 = bootstrap_ratio(arm("a", [20.0, 22.0, 24.0]), arm("b", [18.0, 20.0, 22.0]))
    assert r3.estimate == pytest.approx(1.1) and 20 / 22 <= r3.lo < 1.1 < r3.hi <= 24 / 18
    assert math.isnan(bootstrap_ratio(arm("a", [1.0]), arm("b", [1.0, 2.0])).lo)


@pytest.mark.parametrize("lo, hi, side, verdict", [
    (-3.0, -1.0, "<", AGREES), (1.0, 3.0, "<", DISAGREES), (-1.0, 1.0, "<", INCONCLUSIVE),
    (1.0, 3.0, ">", AGREES), (-3.0, -1.0, ">", DISAGREES), (math.nan, math.nan, "<", INCONCLUSIVE)])
def test_side_verdicts(lo, hi, side, verdict):
    assert side_verdict(Interval("difference", (lo + hi) / 2, lo, hi), side, 0.0) == verdict


@pytest.mark.parametrize("lo, hi, verdict", [(0.9, 1.2, AGREES), (1.3, 1.6, DISAGREES), (1.1, 1.4, INCONCLUSIVE),
                                             (0.8, math.inf, INCONCLUSIVE)])
def test_competitive_margin(lo, hi, verdict):
    assert competitive_verdict(Interval("ratio", 1.0, lo, hi), 1.25) == verdict


def test_combine_and_the_seed_and_budget_gates():
    assert combine([AGREES, AGREES]) == AGREES
    assert combine([AGREES, DISAGREES]) == DISAGREES
    assert combine([AGREES, INCONCLUSIVE]) == INCONCLUSIVE
    arms = [arm("edm", [1, 2, 3]), arm("vp", [2.0]), arm("ve", [3.0, 4.0])]
    assert seed_shortfall(arms) == "n = 1 < 3 (vp); n = 2 < 3 (ve)"
    assert seed_shortfall(arms, required=2) == "n = 1 < 2 (vp)"
    assert seed_shortfall(arms[:1]) is None
    assert gate(AGREES, arms) == (INCONCLUSIVE, ["n = 1 < 3 (vp); n = 2 < 3 (ve)"])
    assert gate(DISAGREES, arms[:1], budget_reason="not trained to the budget T") == \
        (INCONCLUSIVE, ["not trained to the budget T"])
    assert gate(DISAGREES, arms[:1]) == (DISAGREES, [])
    assert np.isfinite(arms[0].sd)
