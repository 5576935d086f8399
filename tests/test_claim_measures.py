"""The measurements behind the claims table (methods.md section 6) on hand-computable cases."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from diffrepro.ideal import IdealDenoiser
from diffrepro.metrics.fid_curves import budget_from_curve, steps_to_target
from diffrepro.metrics.generalization import (gap_significance, heldout_loss, intermediate_gap, weighted_gap,
                                              weighted_gap_peak)
from diffrepro.metrics.sampler_error import nfe_to_reference, per_sample_rmse
from diffrepro.metrics.toy2d_study import chance_corrected, gu_chance_level
from diffrepro.metrics.trajectory import posterior_concentration


# ------------------------------------------------------------------------------------------ budget T
def test_budget_is_the_first_step_whose_last_quarter_moved_less_than_5_percent():
    steps = [5, 10, 20, 40, 60, 80, 100]
    fid = [100, 50, 30, 25, 24.5, 24.2, 24.0]
    # s = 40: window [30, 40], f(30) = 27.5 -> (27.5 - 25) / 25 = 10%; s = 60: window [45, 60],
    # f(45) = 24.875 -> 0.375 / 24.5 = 1.5% < 5%: T = 60
    assert budget_from_curve(steps, fid) == 60
    assert budget_from_curve(steps, fid, tol=0.12) == 40
    still_falling = [100.0 / s for s in steps]          # 1/s: the last quarter always moves by 1/3
    assert budget_from_curve(steps, still_falling) is None
    assert budget_from_curve(steps[::-1], fid[::-1]) == 60   # order does not matter


def test_steps_to_target_interpolates_the_first_crossing():
    steps, fid = [0, 10, 20, 30], [100, 50, 30, 35]
    assert steps_to_target(steps, fid, 40) == 15.0       # between 50 at 10 and 30 at 20
    assert steps_to_target(steps, fid, 120) == 0.0        # already there at the first checkpoint
    assert steps_to_target(steps, fid, 30) == 20.0
    assert math.isinf(steps_to_target(steps, fid, 10))


# ------------------------------------------------------------------------------------------ E1
def test_nfe_to_reference_takes_the_point_from_which_fid_stays_close():
    # relative errors 0.5, 0.05, 0.025, 0.005: the last one outside 2% is NFE 32; crossing at
    # t = (0.025 - 0.02) / (0.025 - 0.005) = 1/4 of the way to 64 in ln(NFE): 32 * 2^(1/4)
    assert nfe_to_reference([8, 16, 32, 64], [30, 21, 20.5, 20.1], 20.0) == pytest.approx(32 * 2 ** 0.25)
    # a coarse sampler that happens to land near the reference FID does not count (16 is far off again)
    assert nfe_to_reference([8, 16, 32], [19.9, 25.0, 20.1], 20.0) > 16
    assert nfe_to_reference([8, 16], [20.1, 20.2], 20.0) == 8.0
    assert math.isinf(nfe_to_reference([8, 16], [30.0, 25.0], 20.0))


def test_per_sample_rmse_on_the_model_scale():
    black, white = np.zeros((3, 4, 4, 1), np.uint8), np.full((3, 4, 4, 1), 255, np.uint8)
    np.testing.assert_allclose(per_sample_rmse(black, white), 2.0)
    a = np.zeros((2, 3))
    b = np.array([[0.0, 0.0, 0.3], [0.1, 0.1, 0.1]])
    np.testing.assert_allclose(per_sample_rmse(a, b), [math.sqrt(0.09 / 3), 0.1])
    with pytest.raises(ValueError, match="same latents"):
        per_sample_rmse(a, b[:1])


# ------------------------------------------------------------------------------------------ K3
def test_posterior_concentration_by_hand():
    """Two training points (0,0) and (2,0). Midway both weigh 1/2 (n_eff 2); on (0,0) at sigma 1 the
    logits are 0 and -4/2: w = (1/(1+e^-2), e^-2/(1+e^-2))."""
    ideal = IdealDenoiser(torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64))
    w, n = posterior_concentration(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 1.0, ideal)
    w1 = 1 / (1 + math.exp(-2))
    assert w[0].item() == pytest.approx(0.5) and n[0].item() == pytest.approx(2.0)
    assert w[1].item() == pytest.approx(w1) and n[1].item() == pytest.approx(1 / (w1 ** 2 + (1 - w1) ** 2))
    # tiny sigma on a training point: all weight on it
    w, n = posterior_concentration(torch.tensor([[2.0, 0.0]]), 0.01, ideal)
    assert w.item() == pytest.approx(1.0) and n.item() == pytest.approx(1.0)


def test_posterior_concentration_streams_over_chunks_like_a_direct_softmax():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(37, 5, generator=g, dtype=torch.float64)
    x = torch.randn(9, 5, generator=g, dtype=torch.float64) * 1.5
    sigma = 0.7
    logits = -torch.cdist(x, data).pow(2) / (2 * sigma ** 2)
    w = torch.softmax(logits, 1)
    w_max, n_eff = posterior_concentration(x, sigma, IdealDenoiser(data, chunk_size=8), query_chunk=4, train_chunk=5)
    torch.testing.assert_close(w_max, w.max(1).values, rtol=1e-10, atol=0)
    torch.testing.assert_close(n_eff, 1 / w.pow(2).sum(1), rtol=1e-10, atol=0)


# ------------------------------------------------------------------------------------------ K1, K2, S3
def _curve():
    sigma = np.exp(np.linspace(math.log(0.002), math.log(80), 12))
    mse_t = 0.25 * sigma ** 2 / (0.25 + sigma ** 2)
    gap = np.where((sigma > 0.2) & (sigma < 5), 0.01, 0.0) + 1e-4
    return pd.DataFrame(dict(sigma=sigma, mse_train=mse_t, mse_heldout=mse_t + gap, gap=gap,
                             se_gap=np.full(12, 1e-3)))


def test_weighted_gaps_and_their_peak():
    c = _curve()
    sigma, rel, se = weighted_gap(c, "relative")
    np.testing.assert_allclose(rel, c["gap"] / c["mse_train"])
    np.testing.assert_allclose(se, c["se_gap"] / c["mse_train"])
    _, lam, _ = weighted_gap(c, "lambda")
    np.testing.assert_allclose(lam, (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2 * c["gap"])
    # relative: 1e-4 / mse_train is huge at sigma = 0.002 (mse ~ sigma^2): the peak sits at the low end
    assert not weighted_gap_peak(c, "relative")["interior"]
    flat_end = c.assign(gap=np.where((c.sigma > 0.2) & (c.sigma < 5), 0.01, 0.0), se_gap=0.01 * c.mse_train)
    p = weighted_gap_peak(flat_end, "relative")
    assert p["interior"] and 0.2 < p["peak_sigma"] < 5 and p["margin_lo"] > 0
    # the same peak with a standard error as large as the curve at the low end is not clear
    assert weighted_gap_peak(flat_end.assign(se_gap=1e-3), "relative")["margin_lo"] < 0
    assert gap_significance(c) == pytest.approx(10.1)
    with pytest.raises(ValueError):
        weighted_gap(c, "bogus")


def test_intermediate_gap_and_heldout_loss():
    c = _curve()
    assert intermediate_gap(c) == pytest.approx(0.0101)        # the four grid points in [0.2, 5]
    two = pd.DataFrame(dict(sigma=[math.exp(-2.4), math.exp(0.0)], mse_heldout=[0.01, 0.2]))
    lam = lambda s: (s ** 2 + 0.25) / (s * 0.5) ** 2            # both at one P_std from P_mean: weights 1/2
    assert heldout_loss(two) == pytest.approx(0.5 * lam(math.exp(-2.4)) * 0.01 + 0.5 * lam(1.0) * 0.2)


# ------------------------------------------------------------------------------------------ 2D toy
def test_gu_chance_level_of_locally_uniform_2d_data_is_one_ninth():
    """d1/d2 < t has probability t^2 for a 2D Poisson process (given d2, d1^2 is uniform on [0, d2^2]):
    1/9 at t = 1/3. Uniform training points in the unit square, fresh uniform draws (edge effects and
    binomial noise within 0.015)."""
    rng = np.random.default_rng(0)
    train, fresh = rng.uniform(size=(2000, 2)), rng.uniform(size=(20000, 2))
    assert gu_chance_level(fresh, train) == pytest.approx(1 / 9, abs=0.015)
    assert chance_corrected(0.5, 0.1) == pytest.approx(0.4 / 0.9)
    assert chance_corrected(0.1, 0.1) == 0.0 and chance_corrected(0.0, 0.1) < 0
    np.testing.assert_allclose(chance_corrected(np.array([1.0, 0.1]), 0.1), [1.0, 0.0])
