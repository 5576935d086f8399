"""2D toy study (methods.md section 5 (c)): flow fields against the ideal denoiser of a finite set,
closeness of samples to the training points, a small real training sweep, and the figures.

Oracles: the ideal denoiser D* (at small sigma it maps a point to its nearest training point), planted
samples with a known fraction, and the expected monotone trends of a real training run (margins in
the docstrings, measured on seeds 0-3)."""
import math

import numpy as np
import pytest
import torch

from diffrepro.ideal import IdealDenoiser
from diffrepro.metrics.toy2d_study import (
    denoiser_divergence, field_error, flow_field, fraction_near_training, plot_flow_fields,
    plot_memorization_sweep, sample_points, toy_sweep,
)
from diffrepro.toy2d import make_toy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def points8():
    return make_toy("gmm", 8, seed=0)


@pytest.fixture(scope="module")
def ideal8(points8):
    return IdealDenoiser(torch.from_numpy(points8).double())


def smoothed(ideal, factor=2.0):
    """The ideal denoiser evaluated at an inflated sigma: a smoother, non-ideal field."""
    return lambda x, sigma, class_labels=None: ideal(x, factor * sigma)


# ---------------------------------------------------------------------------------------------- fields

def test_ideal_flow_points_to_nearest_training_point(points8, ideal8):
    """At sigma = 0.02, D*(x) is x's nearest training point wherever that one is clearly nearest, so the
    flow direction -dx/dsigma = (D* - x)/sigma points at it (cosine > 0.999)."""
    sigma = 0.02
    f = flow_field(ideal8, sigma, grid_lim=1.25, n_grid=41)
    assert f.points.shape == (41 * 41, 2) and f.velocity.shape == f.denoised.shape == f.points.shape
    np.testing.assert_allclose(f.velocity, (f.points - f.denoised) / sigma, rtol=0, atol=1e-12)
    # grid row-major with y slow: as_images gives (n_grid, n_grid) arrays indexed [y, x]
    U, V, _ = f.as_images()
    assert U[3, 5] == f.displacement[3 * 41 + 5, 0] and f.points[3 * 41 + 5, 0] == f.axis[5]

    d = np.linalg.norm(f.points[:, None] - points8[None].astype(np.float64), axis=-1)
    order = np.sort(d, 1)
    d1, d2, nn = order[:, 0], order[:, 1], d.argmin(1)
    # "clearly nearest": the second point's posterior weight is below e^-20 of the first's
    near = (d1 < 0.2) & ((d2 ** 2 - d1 ** 2) / (2 * sigma ** 2) > 20) & (d1 > 1e-6)
    assert near.sum() >= 30
    to_nn = points8[nn[near]] - f.points[near]
    flow = -f.velocity[near]
    cos = (to_nn * flow).sum(1) / (np.linalg.norm(to_nn, axis=1) * np.linalg.norm(flow, axis=1))
    assert cos.min() > 0.999, cos.min()
    # localized: D* lands on the training point itself, not on a blend
    assert np.abs(f.denoised[near] - points8[nn[near]].astype(np.float64)).max() < 1e-6
    # and it collapses the neighbourhood: div D* ~ 0 there (a smooth field would not)
    div = denoiser_divergence(ideal8, torch.from_numpy(f.points[near]), sigma)
    assert div.abs().max() < 1e-3


def test_field_error_zero_for_ideal_positive_for_smoothed(ideal8):
    sigmas = (0.02, 0.1, 0.3, 1.0)
    same = field_error(ideal8, ideal8, sigmas, n_grid=15, n_noised=256)
    assert set(same.region) == {"grid", "noised_train"} and len(same) == 2 * len(sigmas)
    assert (same[["rms", "mean", "max"]].to_numpy() == 0).all()
    smooth = field_error(smoothed(ideal8), ideal8, sigmas, n_grid=15, n_noised=256)
    assert (smooth["rms"] > 0).all()
    near = smooth[smooth.region == "noised_train"].set_index("sigma")
    assert near.loc[0.1, "rms"] > 0.01, near
    # at small sigma the smoothed field does not collapse as hard onto the training points (at large
    # sigma, D* at 2 sigma pulls harder towards the mean instead, so only sigma = 0.02 is checked)
    assert near.loc[0.02, "div_trained"] > 1.5 * near.loc[0.02, "div_ideal"], near


# ---------------------------------------------------------------------------------------------- fractions

def test_fraction_near_training_planted():
    """11 samples: 5 exact copies, 2 at eps/2 from a training point, 1 at 2 eps, 3 far away.
    Within eps: 7/11; within 3 eps: 8/11. Gu (d1/d2 < 1/3, training points >= 1 apart): copies and the
    eps/2 and 2 eps ones are memorized (d1 <= 0.02), the far ones (centre between points) are not."""
    train = np.array([[i, j] for i in range(4) for j in range(3)], dtype=np.float64)   # 12 points, spacing 1
    eps = 0.01
    samples = np.concatenate([
        train[[0, 3, 5, 7, 11]],
        train[[1, 2]] + np.array([[eps / 2, 0.0], [0.0, -eps / 2]]),
        train[[4]] + np.array([[2 * eps, 0.0]]),
        np.array([[0.5, 0.5], [1.5, 1.5], [2.5, 0.5]]),
    ])
    res = fraction_near_training(samples, train, eps=(eps, 3 * eps))
    assert res.fraction == (7 / 11, 8 / 11)
    assert res.fraction_gu == 8 / 11
    np.testing.assert_allclose(res.d1[:5], 0.0, atol=0)
    np.testing.assert_allclose(res.d1[-3:], math.sqrt(0.5), rtol=1e-12)
    assert list(res.nearest[:5]) == [0, 3, 5, 7, 11]
    # tensors and a single training point work too (no Gu ratio then)
    one = fraction_near_training(torch.from_numpy(samples), train[:1], eps=0.5)
    assert one.fraction == (float(np.mean(np.linalg.norm(samples - train[0], axis=1) <= 0.5)),)
    assert math.isnan(one.fraction_gu)


def test_ideal_denoiser_samples_are_training_points(points8, ideal8):
    """EDM's Heun sampler with D* ends on the training points (the ideal model memorizes)."""
    samples = sample_points(ideal8, 64, num_steps=32, seed=0)
    res = fraction_near_training(samples, points8, eps=1e-3)
    assert res.fraction == (1.0,) and res.fraction_gu == 1.0
    assert len(set(res.nearest)) >= 6            # and it reaches most of them, not one


# ---------------------------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def small_sweep():
    """Width 128, N in {8, 512}, 200 and 800 steps: about 7 s on one CPU thread."""
    return toy_sweep("gmm", widths=[128], n_trains=[8, 512], steps=[200, 800], eps=0.02, n_samples=400,
                     seed=0, data_seed=0)


@pytest.mark.integration
def test_sweep_table_layout(small_sweep):
    t = small_sweep.table
    assert {"dataset", "factor", "model", "width", "n_train", "step", "eps", "fraction", "fraction_gu",
            "fraction_heldout", "excess"} <= set(t.columns)
    assert set(t.factor) == {"width", "n_train", "step"}
    assert len(t[t.factor == "width"]) == 1 and len(t[t.factor == "step"]) == 2
    assert len(t[(t.factor == "n_train") & (t.model == "mlp")]) == 2
    assert set(small_sweep.models) == {(128, n, s) for n in (8, 512) for s in (200, 800)}
    ideal = t[t.model == "ideal"].set_index("n_train")
    assert ideal.loc[8, "fraction"] == 1.0      # D* of 8 points: every sample is a training point


@pytest.mark.integration
def test_sweep_memorization_falls_with_n_and_rises_with_steps(small_sweep):
    """Same budget (width 128, 800 steps, lr 3e-3, batch 128). N = 8 memorizes, N = 512 generalizes.
    Measured on seeds 0-3 (seed 0 in brackets):
      Gu fraction  N=8: 0.57-0.76 (0.72),  N=512: 0.03-0.09 (0.09)          -> asserted gap > 0.4
      excess within eps = 0.02 over fresh data: N=8: 0.63-0.72 (0.65), N=512: <= -0.02 (-0.22) -> gap > 0.4
      N=8, Gu at 200 -> 800 steps: +0.33..+0.47 (+0.33)                       -> asserted > +0.15
      N=8, within eps at 200 -> 800 steps: +0.39..+0.58 (+0.39)              -> asserted > +0.2"""
    ev = small_sweep.evaluations
    mlp = ev[ev.model == "mlp"].set_index(["n_train", "step"])
    print(mlp[["fraction", "fraction_heldout", "excess", "fraction_gu"]])
    a, b = mlp.loc[(8, 800)], mlp.loc[(512, 800)]
    assert a.fraction_gu - b.fraction_gu > 0.4
    assert a.excess - b.excess > 0.4
    early = mlp.loc[(8, 200)]
    assert a.fraction_gu - early.fraction_gu > 0.15
    assert a.fraction - early.fraction > 0.2


# ---------------------------------------------------------------------------------------------- figures

@pytest.mark.integration
def test_plots_write_png(tmp_path, points8, ideal8, small_sweep):
    path = tmp_path / "flow.png"
    models = {"smoothed D*": smoothed(ideal8), "MLP w=128, 800 steps": small_sweep.models[(128, 8, 800)]}
    plot_flow_fields(ideal8, models, points8, sigmas=(0.02, 0.3), path=path, n_grid=11)
    path2 = tmp_path / "sweep.png"
    plot_memorization_sweep(small_sweep.table, path2)
    for p in (path, path2):
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 10_000
    assert sorted(x.name for x in tmp_path.iterdir()) == ["flow.png", "sweep.png"]   # no temporary left
    import matplotlib.pyplot as plt
    h, w, _ = plt.imread(path).shape
    assert h > 300 and w > 300
    with pytest.raises(ValueError, match="lacks columns"):
        plot_memorization_sweep(small_sweep.table.drop(columns="factor"), tmp_path / "bad.png")
