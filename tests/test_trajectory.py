"""Trajectory analysis (methods.md section 5 (b), claim K3) against oracles: the ideal denoiser as the model
(zero error along trajectories, samples on training points, trajectory points distributed like noised
training points), a kernel-smoothed ideal denoiser (a generalizing model), and the closed-form
E sqrt(chi2_d / d) for noised training points."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from diffrepro.ideal import IdealDenoiser
from diffrepro.metrics.memorization import memorization_scores, nearest_neighbours
from diffrepro.metrics.trajectory import (chi_mean, nearest_train_distance, nearest_train_ratio, noised_training_points,
                                          plot_trajectory, trajectory_statistics)
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.toy2d import make_toy


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gmm16():
    return torch.from_numpy(make_toy("gmm", 16, seed=0))


def kde_denoiser(data: torch.Tensor, bandwidth: float):
    """Ideal denoiser of the kernel density estimate p = (1/N) sum_j N(y_j, h^2 I) of the training set:
    E[y | x] = lam x + (1 - lam) D*(x; sqrt(sigma^2 + h^2)), lam = h^2 / (h^2 + sigma^2). It samples the
    KDE (points scattered about h around the training points): a smooth, generalizing field."""
    ideal = IdealDenoiser(data)

    def D(x, sigma, class_labels=None):
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
        lam = bandwidth ** 2 / (bandwidth ** 2 + s ** 2)
        wide = ideal(x.double(), (s.flatten() ** 2 + bandwidth ** 2).sqrt())
        return (lam * x.double() + (1 - lam) * wide).to(x.dtype)
    return D


def test_ideal_denoiser_as_model_is_exact_and_memorizes(gmm16):
    res = trajectory_statistics(IdealDenoiser(gmm16), gmm16, n_samples=256, sampler_kwargs=dict(num_steps=18))
    steps = res.steps
    assert len(steps) == 18 and steps["sigma"].is_monotonic_decreasing
    # D_theta == D*: the error is exactly zero along trajectories and on noised training data
    assert (res.e_traj == 0).all() and (res.e_train == 0).all()
    # the final samples sit on training points (Gu ratio d1/d2 < 1/3 for every sample)
    assert res.memorization.fraction_memorized == 1.0
    direct = memorization_scores(res.samples.numpy(), gmm16.numpy())
    assert direct.fraction_memorized == 1.0 and direct.d1.max() < 1e-3
    # at the smallest sigma every trajectory point is within a few sigma*sqrt(d) of a training point
    last = steps.iloc[-1]
    assert last["sigma"] == pytest.approx(0.002)
    assert res.r_traj[-1].max() < 4.0, res.r_traj[-1].max()
    # and the nearest training point at the last step is the one the sample ends on
    assert (res.nearest_traj[-1] == res.memorization.nearest).all()
    # exact PF-ODE of the empirical distribution: x_i is distributed like a noised training point,
    # so the two r distributions overlap (2-D: broad Rayleigh-like distributions, 256 draws each)
    assert (steps["r_overlap"] > 0.75).all(), steps["r_overlap"].min()
    assert ((steps["r_traj_median"] - steps["r_train_median"]).abs() < 0.3).all()


def test_x_i_is_aligned_with_sigma_i():
    """In d = 16 the r distributions are narrow: trajectory points of the ideal denoiser have the same
    median r as noised training points at every step (within 10%), whereas pairing x_i with a neighbouring
    step's sigma would change r by the step ratio sigma_i / sigma_(i+1) >= 1.39 (EDM, 18 steps)."""
    g = torch.Generator().manual_seed(0)
    Y = 0.5 * torch.randn(32, 16, generator=g)
    res = trajectory_statistics(IdealDenoiser(Y), Y, n_samples=256)
    ratio = (res.steps["r_traj_median"] / res.steps["r_train_median"]).to_numpy()
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
    step_ratio = res.sigmas[:-1] / res.sigmas[1:]
    assert step_ratio.min() > 1.35
    assert (res.e_traj == 0).all()
    # the posterior of D* is as concentrated on trajectory points as on noised training points (claim K3's
    # measurement is neutral for the exact model): medians within 0.1 in max weight at every step
    assert (np.abs(res.steps["w_max_traj"] - res.steps["w_max_train"]) < 0.1).all()
    assert ((res.w_max_traj >= 1 / 32 - 1e-12) & (res.w_max_traj <= 1 + 1e-12)).all()
    assert ((res.n_eff_train >= 1 - 1e-9) & (res.n_eff_train <= 32 + 1e-9)).all()


def test_smoothed_denoiser_has_error_and_memorizes_less(gmm16):
    ideal = trajectory_statistics(IdealDenoiser(gmm16), gmm16, n_samples=256)
    kde = trajectory_statistics(kde_denoiser(gmm16, 0.1), gmm16, n_samples=256)
    assert (kde.steps["e_traj"] > 0).all() and (kde.steps["e_train"] > 0).all()
    frac = kde.memorization.fraction_memorized
    assert frac < 0.5 * ideal.memorization.fraction_memorized, frac
    # at small sigma its trajectories end between training points, far outside the noised-data shell
    last = kde.steps.iloc[-1]
    assert last["r_traj_median"] > 10 * last["r_train_median"], last
    assert last["r_overlap"] < 0.1
    # along the end of the trajectories the model is further from D* than on noised training data (K3)
    assert last["e_traj"] > 10 * last["e_train"]
    # the same schedule gives the same statistics (fixed seeds and noised-training noise)
    again = trajectory_statistics(kde_denoiser(gmm16, 0.1), gmm16, n_samples=256)
    pd.testing.assert_frame_equal(kde.steps, again.steps, check_exact=True)


def test_sigma_inflated_ideal_denoiser_still_memorizes(gmm16):
    """D*(x; sigma sqrt(1 + s^2)) is wrong at every sigma (e_traj > 0) yet still collapses onto training
    points as sigma -> 0: blurring in sigma alone is not a generalizing model."""
    base = IdealDenoiser(gmm16)

    def D(x, sigma, class_labels=None):
        return base(x, torch.as_tensor(sigma, dtype=torch.float64) * math.sqrt(2.0))
    res = trajectory_statistics(D, gmm16, n_samples=256)
    assert (res.steps["e_traj"] > 0).all()
    assert res.memorization.fraction_memorized > 0.9


@pytest.mark.parametrize("d, sigma", [(1024, 0.05), (2, 0.002)])
def test_r_train_is_the_chi_mean_for_noised_training_points(d, sigma):
    """r of y_k + sigma n, its own y_k being the nearest training point, is sqrt(chi2_d / d): mean
    sqrt(2/d) G((d+1)/2) / G(d/2) (1 - 1/(4d) for large d; sqrt(pi)/2 for d = 2)."""
    if d == 2:
        Y = torch.from_numpy(make_toy("gmm", 16, seed=0))
    else:
        Y = torch.rand(32, d, generator=torch.Generator().manual_seed(1)) * 2 - 1
    idx = torch.arange(2048) % len(Y)
    x = noised_training_points(Y[idx], sigma, sigma_index=0, seed=3)
    r, nearest = nearest_train_ratio(x, sigma, Y)
    assert (nearest == idx.numpy()).mean() > 0.99
    se = r.std() / math.sqrt(len(r))
    assert abs(r.mean() - chi_mean(d)) < 4 * se, (r.mean(), chi_mean(d), se)
    if d == 1024:
        assert abs(r.mean() - 1) < 0.01 and r.std() < 0.03          # concentrated at 1 in high dimension
    assert chi_mean(2) == pytest.approx(math.sqrt(math.pi) / 2)


def test_nearest_distance_matches_the_certified_search():
    """The float64 search agrees with memorization.nearest_neighbours (certified exact) on indices and
    distances, near training points (small sigma) and among near-equidistant ones (large sigma)."""
    g = torch.Generator().manual_seed(4)
    Y = torch.rand(300, 3, 8, 8, generator=g) * 2 - 1
    ideal = IdealDenoiser(Y)
    for sigma in (0.002, 0.3, 80.0):
        x = Y[torch.arange(50) * 3] + sigma * torch.randn(50, 3, 8, 8, generator=g)
        dist, idx = nearest_train_distance(x, ideal, query_chunk=16, train_chunk=64)
        ref_d, ref_i = nearest_neighbours(x, Y, k=1)
        assert np.array_equal(idx.numpy(), ref_i[:, 0])
        np.testing.assert_allclose(dist.numpy(), ref_d[:, 0], rtol=1e-12)
        r, _ = nearest_train_ratio(x, sigma, Y)
        np.testing.assert_allclose(r, ref_d[:, 0] / (sigma * math.sqrt(192)), rtol=1e-12)


def test_image_denoiser_runs_and_plots(tmp_path):
    """NCHW path with a (random) tiny U-Net: shapes, finite statistics and the figure."""
    torch.manual_seed(0)
    net = EDMPrecond(build_network("tiny", channels=1, img_resolution=8)).eval()
    Y = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = trajectory_statistics(net, Y, n_samples=6, n_train_points=10,
                                sampler_kwargs=dict(num_steps=5, sampler="euler"))
    s = res.steps
    assert len(s) == 5 and (s["n_traj"] == 6).all() and (s["n_train"] == 10).all()
    assert res.r_traj.shape == (5, 6) and res.e_train.shape == (5, 10) and res.samples.shape == (6, 1, 8, 8)
    assert np.isfinite(s.drop(columns=["e_ratio"]).to_numpy()).all() and (s["e_traj"] > 0).all()
    ideal = trajectory_statistics(IdealDenoiser(Y), Y, n_samples=6, sampler_kwargs=dict(num_steps=5, sampler="euler"))
    both = pd.concat([s.assign(model="unet"), ideal.steps.assign(model="ideal")])
    plot_trajectory(both, tmp_path / "traj.png", title="test")
    assert (tmp_path / "traj.png").stat().st_size > 1000



def test_images_far_outside_the_data_range_are_clamped_like_written_images():
    """An undertrained model's samples can overshoot [-1, 1] by far (seen: +-100 for VE after a few steps);
    their memorization is scored on the clamped image, as every written image is, instead of failing."""
    Y = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    class Blowup(torch.nn.Module):      # denoises to 100 x the ideal denoiser's output
        def __init__(self):
            super().__init__()
            self.ideal = IdealDenoiser(Y)

        def forward(self, x, sigma, labels=None):
            return 100 * self.ideal(x, sigma)

    res = trajectory_statistics(Blowup(), Y, n_samples=4, sampler_kwargs=dict(num_steps=5, sampler="euler"))
    assert res.samples.abs().max() > 20
    clamped = res.samples.clamp(-1, 1)
    d = torch.cdist(clamped.flatten(1).double(), Y.flatten(1).double())
    np.testing.assert_array_equal(res.memorization.nearest, d.argmin(1).numpy())
