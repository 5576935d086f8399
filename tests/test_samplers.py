"""Samplers against exact oracles: the ideal denoiser of a finite set and Gaussian data, whose
probability-flow ODE has the closed-form solution x(s) - mu = (x0 - mu) sqrt(std^2+s^2)/sqrt(std^2+smax^2)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from diffrepro.ideal import IdealDenoiser, gaussian_denoiser
from diffrepro.precond import VPPrecond
from diffrepro.samplers import (SeededNoise, edm_sigma_steps, generate, generate_batches, ode_sampler,
                                sigma_steps, stochastic_sampler, ve_sigma_steps, vp_sigma_steps)

MU = torch.tensor([0.3, -0.2], dtype=torch.float64)
STD = 0.5


def exact_gaussian_flow(x0, sigma_from, sigma_to):
    return MU + (x0 - MU) * math.sqrt(STD ** 2 + sigma_to ** 2) / math.sqrt(STD ** 2 + sigma_from ** 2)


def latents(n=1000, dim=2, seed=0):
    return torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_discretizations_match_table1():
    s = edm_sigma_steps(18)
    assert len(s) == 19 and s[-1] == 0
    assert s[0].item() == pytest.approx(80.0) and s[-2].item() == pytest.approx(0.002)
    i = np.arange(18)
    ref = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(s[:-1], ref, rtol=1e-12)
    ve = ve_sigma_steps(10)
    np.testing.assert_allclose(ve[:-1] ** 2, 100.0 ** 2 * (0.02 ** 2 / 100.0 ** 2) ** (np.arange(10) / 9), rtol=1e-12)
    vp = vp_sigma_steps(10)
    t = 1 + np.arange(10) / 9 * (1e-3 - 1)
    np.testing.assert_allclose(vp[:-1], np.sqrt(np.exp(0.5 * 19.9 * t ** 2 + 0.1 * t) - 1), rtol=1e-12)
    with pytest.raises(ValueError, match="discretization"):
        sigma_steps("cosine", 10)


def test_heun_lands_on_training_points_with_ideal_denoiser():
    pts = torch.tensor([[-0.5, 0.0], [0.5, 0.0]], dtype=torch.float64)
    res = stochastic_sampler(IdealDenoiser(pts), latents(2000), edm_sigma_steps(18), solver="heun")
    dist = torch.cdist(res.samples, pts).min(1).values
    assert dist.max().item() < 1e-3
    assert res.nfe == 35
    # both points are reached, in about equal numbers
    frac = (res.samples[:, 0] > 0).double().mean().item()
    assert 0.4 < frac < 0.6


@pytest.mark.parametrize("solver,order", [("heun", 4.0), ("euler", 2.0)])
def test_convergence_order_on_gaussian_data(solver, order):
    """Halving the number of steps multiplies Heun's error by ~4 (2nd order), Euler's by ~2."""
    lat = latents(1000)
    exact = exact_gaussian_flow(lat * 80.0, 80.0, 0.0)
    errs = []
    for n in (32, 64):
        out = stochastic_sampler(gaussian_denoiser(MU, STD), lat, edm_sigma_steps(n), solver=solver).samples
        errs.append((out - exact).pow(2).mean().sqrt().item())
    ratio = errs[0] / errs[1]
    assert order * 0.85 < ratio < order * 1.2, (errs, ratio)


def test_stochastic_with_zero_churn_equals_heun():
    D = gaussian_denoiser(MU, STD)
    lat = latents(64)
    a = stochastic_sampler(D, lat, edm_sigma_steps(18), S_churn=0.0, S_noise=1.003, S_tmin=0.05, S_tmax=50)
    b = ode_sampler(D, lat, edm_sigma_steps(18), solver="heun")
    torch.testing.assert_close(a.samples, b.samples, rtol=1e-13, atol=1e-13)
    c = generate(D, (2,), list(range(16)), sampler="stochastic", S_churn=0.0, dtype=torch.float64)
    d = generate(D, (2,), list(range(16)), sampler="heun", dtype=torch.float64)
    assert torch.equal(c.samples, d.samples)


def test_stochastic_churn_moves_samples_and_still_converges():
    pts = torch.tensor([[-0.5, 0.0], [0.5, 0.0]], dtype=torch.float64)
    D = IdealDenoiser(pts)
    a = generate(D, (2,), list(range(200)), sampler="stochastic", S_churn=40, S_tmin=0.05, S_tmax=50,
                 S_noise=1.003, dtype=torch.float64)
    b = generate(D, (2,), list(range(200)), sampler="heun", dtype=torch.float64)
    assert not torch.equal(a.samples, b.samples)
    assert torch.cdist(a.samples, pts).min(1).values.max().item() < 1e-3


def test_general_ode_sampler_with_vp_schedule_and_scaling():
    """Alg. 1 with VP's sigma(t) and s(t) solves the same flow as the EDM schedule."""
    vp = VPPrecond(nn.Identity())
    lat = latents(500)
    sig = vp_sigma_steps(256)
    out = ode_sampler(gaussian_denoiser(MU, STD), lat, sig, schedule=vp, solver="heun").samples
    smax = float(sig[0])
    exact = exact_gaussian_flow(lat * smax, smax, 0.0)
    assert (out - exact).abs().max().item() < 2e-3


def test_nfe_and_trajectory():
    D = gaussian_denoiser(MU, STD)
    for solver, nfe in (("euler", 10), ("heun", 19)):
        res = stochastic_sampler(D, latents(8), edm_sigma_steps(10), solver=solver, return_trajectory=True)
        assert res.nfe == nfe
        assert res.trajectory.shape == (11, 8, 2) and res.denoised.shape == (10, 8, 2)
        assert torch.equal(res.trajectory[-1], res.samples)
        torch.testing.assert_close(res.denoised[3], D(res.trajectory[3], float(res.sigmas[3])))


def test_samples_do_not_depend_on_batching():
    pts = torch.randn(10, 2, dtype=torch.float64)
    D = IdealDenoiser(pts)
    kw = dict(sampler="stochastic", S_churn=10, num_steps=8, dtype=torch.float64)
    whole = generate(D, (2,), list(range(8)), **kw).samples
    parts = torch.cat([generate(D, (2,), list(range(0, 3)), **kw).samples,
                       generate(D, (2,), list(range(3, 8)), **kw).samples])
    # the noise is the same bit for bit; the ideal denoiser's matrix products may round differently at another
    # batch size (about 1 run in 100 of this test differed by 1e-17)
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-12)


def test_seeded_noise_draws_each_sample_from_its_own_generator():
    """Latents and later draws (the stochastic sampler's noise) are randn from a generator seeded with the
    sample's seed, whatever the batch."""
    seeds = [3, 17, 2 ** 40, 5]
    noise = SeededNoise("cpu", seeds)
    first, second = noise.randn((4, 2, 3)), noise.randn((4, 2, 3))
    for k, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        assert torch.equal(first[k], torch.randn(2, 3, generator=g))
        assert torch.equal(second[k], torch.randn(2, 3, generator=g))
    assert torch.equal(SeededNoise("cpu", seeds[1:3]).randn((2, 2, 3)), first[1:3])
    assert SeededNoise("cpu", seeds).randn((4, 2), dtype=torch.float64).dtype == torch.float64


def test_generate_batches_equals_generate_per_batch():
    """The same samples as one generate() per batch, for the deterministic and the stochastic sampler."""
    pts = torch.randn(10, 2, dtype=torch.float64)
    calls = []

    def D(x, sigma, labels=None):
        calls.append(len(x))
        return IdealDenoiser(pts)(x, sigma)

    batches = [list(range(0, 5)), list(range(5, 10)), list(range(10, 13))]
    for kw in (dict(sampler="heun", num_steps=6), dict(sampler="stochastic", S_churn=10, num_steps=6)):
        each = [generate(D, (2,), seeds, dtype=torch.float64, **kw).samples for seeds in batches]
        calls.clear()
        got = [r.samples for r in generate_batches(D, (2,), iter(batches), dtype=torch.float64, **kw)]
        assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, each)), kw
        assert calls == [5] * 11 + [5] * 11 + [3] * 11
    assert list(generate_batches(D, (2,), [])) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latents_written_in_place_equal_a_fresh_draw():
    """On the GPU too, randn written into a row of a batch gives the values a fresh per-sample draw gives."""
    seeds = list(range(100, 140))
    got = SeededNoise("cuda", seeds).randn((40, 3, 32, 32))
    for k, s in enumerate(seeds):
        g = torch.Generator("cuda").manual_seed(s)
        assert torch.equal(got[k], torch.randn(3, 32, 32, generator=g, device="cuda")), k


def _spy(D):
    """Record every sigma the sampler queries D at."""
    calls, forward = [], D.forward

    def spy(x, sigma, class_labels=None):
        calls.append(float(sigma))
        return forward(x, sigma, class_labels)
    D.forward = spy
    return calls


def test_ve_samples_never_query_the_network_below_its_trained_sigma_min():
    """A VE network trained on sigma in [0.02, 100], sampled with EDM's default schedule ([0.002, 80]):
    the schedule is clamped to [0.02, 80] (EDM's generate.py), every call is inside the trained range, and
    the last step lands exactly on 0.02. EDM's own network keeps its [0.002, 80] schedule."""
    from diffrepro.nets import build_network
    from diffrepro.precond import EDMPrecond, VEPrecond

    torch.manual_seed(0)
    ve = VEPrecond(build_network("mlp-small", channels=2)).eval()
    calls = _spy(ve)
    res = generate(ve, (2,), range(8), sampler="heun", num_steps=18)
    assert min(calls) == pytest.approx(0.02) and max(calls) == pytest.approx(80.0)
    assert res.extra["sigma_range"] == pytest.approx((0.02, 80.0))
    calls.clear()                                   # a wider request is clamped at both ends
    generate(ve, (2,), range(4), sampler="euler", num_steps=8, sigma_min=0.001, sigma_max=500.0)
    euler = calls
    assert min(euler) == pytest.approx(0.02) and max(euler) == pytest.approx(100.0)
    edm = EDMPrecond(build_network("mlp-small", channels=2)).eval()
    edm_calls = _spy(edm)
    generate(edm, (2,), range(4), sampler="heun", num_steps=18)
    assert min(edm_calls) == pytest.approx(0.002) and max(edm_calls) == pytest.approx(80.0)
    # no trained range on the denoiser (the ideal denoiser): the schedule is as asked
    ideal = IdealDenoiser(torch.zeros(3, 2, dtype=torch.float64))
    assert generate(ideal, (2,), range(2), num_steps=5).extra["sigma_range"] == pytest.approx((0.002, 80.0))


def test_loaded_ve_model_carries_the_range_it_was_trained_on(tmp_path):
    """The saved run's method spec puts its log-uniform range on the preconditioning object."""
    from diffrepro.models import build_denoiser, load_model, save_model

    method = {"precond": "ve", "sigma_dist": {"kind": "loguniform", "sigma_min": 0.05, "sigma_max": 50.0}}
    net_cfg = {"preset": "mlp-small", "channels": 2}
    D = build_denoiser(net_cfg, "ve", method)
    assert (D.sigma_min, D.sigma_max) == (0.05, 50.0)
    save_model(tmp_path / "m.pt", ema_state=D.state_dict(), net_cfg=net_cfg, precond="ve", spec={"method": method})
    loaded, _ = load_model(tmp_path / "m.pt")
    assert (loaded.sigma_min, loaded.sigma_max) == (0.05, 50.0)
    assert (build_denoiser(net_cfg, "ve").sigma_min, build_denoiser(net_cfg, "edm").sigma_min) == (0.02, 0.002)
