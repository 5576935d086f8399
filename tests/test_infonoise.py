"""InfoNoise: the online profile against closed forms, the sampler against its own table, exact resume,
and a short training run.

Oracles, computed here independently of the module:
  * Gaussian data x0 ~ N(0, s^2 I): mmse(sigma) = s^2 sigma^2 / (s^2 + sigma^2) per dimension;
  * two-point data (+-a, 0) in 2D: the y-coordinate is known exactly, the x-coordinate is a binary
    signal in Gaussian noise, so per dimension mmse = a^2/2 * E_z[sech^2(a^2/sigma^2 + a z/sigma)]
    (1D quadrature), and the same through `IdealDenoiser` by Monte Carlo;
  * the allocation on the bin grid: q = mmse/sigma^2, g = sigma^3/(sigma^3 + c^3) with c from a root
    of q(sigma)/max q = p below the peak, rho = q g / sum(q g h), pi = (rho/lambda) / sum(rho/lambda h).
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import integrate, optimize, stats

from diffrepro.ideal import IdealDenoiser
from diffrepro.methods import build_objective, build_sigma_dist
from diffrepro.methods.infonoise import (DEFAULTS, InfoNoise, gate, gate_sigma, smooth_local_linear,
                                         total_variation)
from diffrepro.methods.infonoise_plots import plot_profile
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.sigma_dist import LogNormal
from diffrepro.toy2d import make_toy
from diffrepro.training import TrainConfig, Trainer

SIGMA_MIN, SIGMA_MAX, BINS, P_GATE = 0.002, 80.0, 128, 0.002
U_MIN, U_MAX = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
H = (U_MAX - U_MIN) / BINS
U = U_MIN + (np.arange(BINS) + 0.5) * H          # bin centres in ln(sigma)
SIG = np.exp(U)
EDGES = U_MIN + np.arange(BINS + 1) * H
A = 0.5                                          # two-point data at (+-A, 0)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------- oracles
def edm_lambda(sigma):
    return (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2


def gaussian_mmse(sigma, var=0.25):
    return var * sigma ** 2 / (var + sigma ** 2)


def two_point_mmse(sigma, a=A):
    def sech2(x):
        e = math.exp(-2 * abs(x))
        return 4 * e / (1 + e) ** 2
    f = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi) * sech2(a * a / sigma ** 2 + a * z / sigma)
    z0 = -a / sigma                              # the integrand peaks where the tanh argument is 0
    return 0.5 * a * a * (integrate.quad(f, -np.inf, z0)[0] + integrate.quad(f, z0, np.inf)[0])


def two_point_gate_sigma(p=P_GATE):
    """c: where q/max q falls to p below the peak of the continuous two-point profile."""
    q = lambda lu: two_point_mmse(math.exp(lu)) / math.exp(2 * lu)
    peak = optimize.minimize_scalar(lambda lu: -q(lu), bounds=(-3, 2), method="bounded")
    q_max = -peak.fun
    return math.exp(optimize.brentq(lambda lu: math.log(max(q(lu), 1e-300) / q_max) - math.log(p),
                                    math.log(0.01), peak.x))


def allocation(q, c, power=3.0):
    g = SIG ** power / (SIG ** power + c ** power)
    rho = q * g / (q * g * H).sum()
    pi = rho / edm_lambda(SIG)
    return g, rho, pi / (pi * H).sum()


def l1(a, b):
    return float(np.abs(a - b).sum() * H)


def feed_log_uniform(dist, mse_fn, steps, batch, seed=0, start=0):
    """Observe `steps` batches of sigma log-uniform over the grid with mse = mse_fn(sigma)."""
    g = torch.Generator().manual_seed(seed)
    for k in range(start, start + steps):
        sigma = (torch.rand(batch, generator=g, dtype=torch.float64) * (U_MAX - U_MIN) + U_MIN).exp().float()
        dist.observe(sigma, torch.as_tensor(mse_fn(sigma.double())).float(), k)


@pytest.fixture(scope="module")
def two_point_table():
    u = np.linspace(U_MIN, U_MAX, 2049)
    return u, np.array([two_point_mmse(math.exp(x)) for x in u])


@pytest.fixture(scope="module")
def two_point_dist(two_point_table):
    """InfoNoise fed the exact two-point mmse (no noise), smoothing off, one refresh after 5 steps."""
    u, m = two_point_table
    dist = InfoNoise(total_steps=10, warmup_frac=0.0, refresh_frac=0.5, smoothing=0.0)
    feed_log_uniform(dist, lambda s: np.interp(s.log().numpy(), u, m), steps=5, batch=16384)
    return dist


# ---------------------------------------------------------------------- profile vs closed forms
@pytest.mark.parametrize("smoothing,tol", [(0.0, 0.01), (2.0, 0.03)])
def test_gaussian_profile_matches_closed_form(smoothing, tol):
    """Exact per-sigma mmse of N(0, 0.5^2 I) data in, the analytic q, rho, pi out (relative error <
    tol on every bin: 1% unsmoothed, from bin averaging and the ~640 draws per bin; 3% with 2-bin
    smoothing, whose curvature bias peaks at ~1.4% near sigma = 0.5). The Gaussian profile is
    monotone, never falls back under p: no gate."""
    dist = InfoNoise(total_steps=10, warmup_frac=0.0, refresh_frac=0.5, smoothing=smoothing)
    feed_log_uniform(dist, gaussian_mmse, steps=5, batch=16384)
    snap = dist.profile_snapshot()
    assert int(snap["step"]) == 5 and dist.active
    np.testing.assert_allclose(snap["ln_sigma"], U, rtol=0, atol=1e-12)
    q = gaussian_mmse(SIG) / SIG ** 2
    _, rho, pi = allocation(q, 0.0)
    for key, ref in (("mmse", gaussian_mmse(SIG)), ("q", q), ("rho", rho), ("pi", pi)):
        err = np.abs(snap[key] / ref - 1).max()
        assert err < tol, (key, err)
    assert float(snap["gate_sigma"]) == 0.0 and (snap["gate"] == 1.0).all()


def test_two_point_profile_gate_and_allocation(two_point_dist):
    """Exact two-point mmse in (smoothing off): c within a quarter bin of the analytic root, the gate
    within 0.02, rho and pi within 0.01 in L1 (measured: 0.06 bin, 0.004, 0.003, 0.002)."""
    snap = two_point_dist.profile_snapshot()
    c = two_point_gate_sigma()
    assert abs(math.log(float(snap["gate_sigma"]) / c)) < 0.25 * H
    mmse = np.array([two_point_mmse(s) for s in SIG])
    g, rho, pi = allocation(mmse / SIG ** 2, c)
    assert np.abs(snap["gate"] - g).max() < 0.02
    assert l1(snap["rho"], rho) < 0.01 and l1(snap["pi"], pi) < 0.01
    big = rho > 1e-2 * rho.max()                 # bin averaging of a steep exponential: < 10% there
    assert (np.abs(snap["rho"][big] / rho[big] - 1) < 0.1).all()
    # the gate matters: without it rho would carry mass below c
    assert (snap["rho"][SIG < 0.5 * c] < 1e-3 * snap["rho"].max()).all()


def test_two_point_through_ideal_denoiser():
    """Monte Carlo MSE of the ideal denoiser of the two points (328k draws, smoothing off): c within
    2 bins (the rare-event tail below c biases it up), rho within 0.08 and pi within 0.06 in L1
    (measured +1.3 bins, 0.045, 0.023). Wrong formulas are far outside these bounds (checked below)."""
    data = torch.from_numpy(make_toy("two_points", 2)).double()
    D = IdealDenoiser(data)
    dist = InfoNoise(total_steps=80, warmup_frac=0.0, refresh_frac=1.0, smoothing=0.0)
    g = torch.Generator().manual_seed(1)
    for k in range(80):
        sigma = (torch.rand(4096, generator=g, dtype=torch.float64) * (U_MAX - U_MIN) + U_MIN).exp()
        y = data[torch.randint(0, 2, (4096,), generator=g)]
        x = y + sigma[:, None] * torch.randn(y.shape, generator=g, dtype=torch.float64)
        dist.observe(sigma.float(), ((D(x, sigma) - y) ** 2).mean(1).float(), k)
    snap = dist.profile_snapshot()
    c = two_point_gate_sigma()
    assert abs(math.log(float(snap["gate_sigma"]) / c)) < 2 * H
    mmse = np.array([two_point_mmse(s) for s in SIG])
    _, rho, pi = allocation(mmse / SIG ** 2, c)
    assert l1(snap["rho"], rho) < 0.08 and l1(snap["pi"], pi) < 0.06
    # power: q = mmse (no 1/sigma^2), pi = rho (no 1/lambda), pi ~ rho*lambda all fail the bounds
    assert l1(allocation(mmse, c)[1], rho) > 0.5
    assert l1(rho, pi) > 0.3
    wrong = rho * edm_lambda(SIG)
    assert l1(wrong / (wrong * H).sum(), pi) > 0.5


# ---------------------------------------------------------------------- sampler
def test_sampler_draws_from_its_table(two_point_dist):
    """KS on ln(sigma) against the piecewise-linear CDF of the table (built here from the snapshot's
    pi): p > 1e-3 for 200k draws (measured 0.44; chi-square 0.25); the same draws reject the prior and the table shifted by one bin
    (p < 1e-6). Chi-square of the bin counts: p > 1e-3. log_density integrates to one and equals
    log pi on the bins, -inf off the grid."""
    pi = two_point_dist.profile_snapshot()["pi"]
    cdf_knots = np.concatenate([[0.0], np.cumsum(pi * H)])
    cdf = lambda u: np.interp(u, EDGES, cdf_knots)
    u = two_point_dist.sample(200_000, torch.Generator().manual_seed(7)).double().log().numpy()
    assert U_MIN - 1e-6 <= u.min() and u.max() <= U_MAX + 1e-6
    p_ks = stats.kstest(u, cdf).pvalue
    assert p_ks > 1e-3, p_ks
    assert stats.kstest(u, lambda x: cdf(x + H)).pvalue < 1e-6
    prior_cdf = lambda x: stats.norm.cdf(x, -1.2, 1.2)
    assert stats.kstest(u, prior_cdf).pvalue < 1e-6
    counts = np.histogram(u, EDGES)[0]
    expected = pi * H * len(u)
    keep = expected >= 5                           # pool the sparse tails into one cell
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    p_chi2 = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
    assert p_chi2 > 1e-3, p_chi2
    # log_density
    grid = torch.linspace(U_MIN - 1, U_MAX + 1, 200_001, dtype=torch.float64)
    logd = two_point_dist.log_density(grid.exp())
    assert torch.isinf(logd[(grid < U_MIN - 1e-9) | (grid > U_MAX + 1e-9)]).all()
    assert torch.trapezoid(logd.exp(), grid).item() == pytest.approx(1.0, abs=1e-3)
    at_centres = two_point_dist.log_density(torch.from_numpy(SIG)).numpy()
    np.testing.assert_allclose(at_centres, np.log(pi), rtol=0, atol=1e-9)


def test_warmup_is_the_prior_and_sampling_uses_only_the_generator():
    dist = InfoNoise(total_steps=1000)             # W = 20 warm-up steps, refresh every K = 10
    assert (dist.warmup_steps, dist.refresh_every) == (20, 10)
    gen = lambda s: torch.Generator().manual_seed(s)
    assert torch.equal(dist.sample(1000, gen(3)), LogNormal().sample(1000, gen(3)))
    snap = dist.profile_snapshot()
    assert int(snap["step"]) == -1 and np.isnan(snap["q"]).all()
    np.testing.assert_allclose(snap["pi"], np.exp(-0.5 * ((U + 1.2) / 1.2) ** 2) / (1.2 * math.sqrt(2 * math.pi)))
    for k in range(20):
        sigma = dist.sample(512, gen(100 + k))
        dist.observe(sigma, gaussian_mmse(sigma), k)
        assert dist.active == (k == 19)            # the table replaces the prior after step W - 1
    assert not torch.equal(dist.sample(1000, gen(3)), LogNormal().sample(1000, gen(3)))
    torch.manual_seed(0)
    ref = torch.rand(5)
    torch.manual_seed(0)
    a = dist.sample(1000, gen(5))
    assert torch.equal(torch.rand(5), ref)         # no draw from the global RNG
    assert torch.equal(a, dist.sample(1000, gen(5))) and not torch.equal(a, dist.sample(1000, gen(6)))
    assert a.dtype == torch.float32 and torch.isfinite(a).all()


def test_unseen_bins_and_bad_values_give_a_finite_table():
    """Only sigma in [0.3, 0.6] is seen: the rest is filled (q constant below, mmse constant above,
    checked with smoothing off), everything stays finite. Draws off the grid and NaN MSEs are
    ignored; with nothing on the grid the sampler stays on the prior."""
    dist = InfoNoise(total_steps=10, warmup_frac=0.0, refresh_frac=0.1, smoothing=0.0)
    g = torch.Generator().manual_seed(0)
    sigma = torch.empty(4000).uniform_(0.3, 0.6, generator=g)
    mse = gaussian_mmse(sigma)
    sigma_bad = torch.tensor([1e-4, 1e3, 0.45, float("nan")])
    mse_bad = torch.tensor([0.1, 0.1, float("nan"), 0.1])
    dist.observe(torch.cat([sigma, sigma_bad]), torch.cat([mse, mse_bad]), 0)
    snap = dist.profile_snapshot()
    for key in ("mmse", "q", "gate", "rho", "pi"):
        assert np.isfinite(snap[key]).all() and (snap[key] > 0).all(), key
    assert (snap["pi"] * H).sum() == pytest.approx(1.0, abs=1e-12)
    seen = np.nonzero(snap["counts"])[0]
    assert snap["counts"].sum() == 4000 and U[seen[0]] > math.log(0.29) and U[seen[-1]] < math.log(0.61)
    np.testing.assert_allclose(snap["q"][:seen[0]], snap["q"][seen[0]], rtol=1e-9)
    np.testing.assert_allclose(snap["mmse"][seen[-1] + 1:], snap["mmse"][seen[-1]], rtol=1e-9)
    logd = dist.log_density(torch.from_numpy(SIG))
    assert torch.isfinite(logd).all()
    assert torch.isfinite(dist.sample(10_000, torch.Generator().manual_seed(1))).all()
    # nothing on the grid: no table, no NaN
    off = InfoNoise(total_steps=10, warmup_frac=0.0, refresh_frac=0.1)
    off.observe(torch.tensor([1e-5, 500.0]), torch.tensor([1.0, 1.0]), 0)
    assert not off.active and torch.isfinite(off.log_density(torch.tensor([0.1, 1.0]))).all()


# ---------------------------------------------------------------------- resume
def _equal_states(a, b):
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype and \
            torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal_states(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_equal_states(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _closed_loop(dist, steps, start):
    """Observations drawn from the distribution itself, noisy Gaussian-data MSEs."""
    for k in range(start, start + steps):
        g = torch.Generator().manual_seed(10_000 + k)
        sigma = dist.sample(256, g)
        noise = 1 + 0.3 * torch.randn(256, generator=g)
        dist.observe(sigma, gaussian_mmse(sigma) * noise.abs(), k)


def test_resume_gives_the_same_samples_and_tables(tmp_path):
    kw = dict(total_steps=200, history=4)          # W = 4, K = 2; a short history gets thinned
    dist = InfoNoise(**kw)
    _closed_loop(dist, 37, 0)                      # stops between refreshes: accumulators are non-empty
    assert dist.state_dict()["counts"].sum() > 0 and dist.state_dict()["refreshes"] == 17
    assert 2 <= len(dist.history()) <= 4
    torch.save(dist.state_dict(), tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    resumed = InfoNoise(**kw)
    resumed.load_state_dict(saved)
    for seed in range(5):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        assert torch.equal(dist.sample(4096, g1), resumed.sample(4096, g2))
    s = torch.logspace(-3, 2, 101)
    assert torch.equal(dist.log_density(s), resumed.log_density(s))
    _closed_loop(dist, 20, 37)
    _closed_loop(resumed, 20, 37)
    assert _equal_states(dist.state_dict(), resumed.state_dict())
    assert not _equal_states(dist.state_dict(), saved)             # the saved state did not alias the live one
    assert torch.equal(dist.sample(4096, torch.Generator().manual_seed(9)),
                       resumed.sample(4096, torch.Generator().manual_seed(9)))
    with pytest.raises(ValueError, match="other parameters"):
        InfoNoise(**{**kw, "bins": 64}).load_state_dict(saved)


def _toy_run(data, steps, method, ckpt_dir=None, batch_size=256, log_every=50, ckpt=None):
    torch.manual_seed(0)
    precond = EDMPrecond(build_network("mlp-small", channels=2))
    objective = build_objective(method, data, total_steps=steps, precond=precond)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=3e-3, ema_halflife_img=20_000,
                      checkpoint_every=ckpt or steps, log_every=log_every, seed=0)
    return Trainer(precond, objective, data, cfg, ckpt_dir=ckpt_dir, progress=False)


METHOD = {"precond": "edm", "sigma_dist": {"kind": "infonoise"}}


def test_trainer_resume_with_infonoise(tmp_path):
    data = torch.from_numpy(make_toy("gmm", 400, seed=0))
    full = _toy_run(data, 40, METHOD, batch_size=64, log_every=10, ckpt=20)
    full.run()
    part = _toy_run(data, 40, METHOD, tmp_path, batch_size=64, log_every=10, ckpt=20)
    for _ in range(20):                            # the same run (same total_steps) stopped at step 20
        part.step()
    part.save_checkpoint()
    resumed = _toy_run(data, 40, METHOD, tmp_path, batch_size=64, log_every=10, ckpt=20)
    assert resumed.try_resume() and resumed.state.step == 20
    resumed.run()
    assert all(torch.equal(a, b) for a, b in zip(full.denoiser.parameters(), resumed.denoiser.parameters()))
    assert _equal_states(full.loss_fn.sigma_dist.state_dict(), resumed.loss_fn.sigma_dist.state_dict())


# ---------------------------------------------------------------------- training
def _eval_loss(D, data, n=8000, seed=123):
    """EDM loss at fixed log-normal sigma and noise (as in test_training)."""
    g = torch.Generator().manual_seed(seed)
    y = data[torch.randint(0, len(data), (n,), generator=g)].double()
    sigma = LogNormal().sample(n, g).double()
    noise = torch.randn(y.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        D_x = D(y + noise * sigma[:, None], sigma).double()
    return (edm_lambda(sigma)[:, None] * (D_x - y) ** 2).sum(1).mean().item()


def test_short_training_moves_the_distribution(tmp_path):
    """400 steps on the 2D mixture: the sampling density leaves the log-normal (TV > 0.15; measured
    0.25), every snapshot is finite, the loss goes down, the profile plot is written."""
    data = torch.from_numpy(make_toy("gmm", 2000, seed=0))
    trainer = _toy_run(data, 400, METHOD)
    dist = trainer.loss_fn.sigma_dist
    assert isinstance(dist, InfoNoise) and dist.loss_weight_fn == trainer.denoiser.loss_weight
    start = _eval_loss(trainer.denoiser, data)
    trainer.run()
    end = _eval_loss(trainer.denoiser, data)
    tv = total_variation(dist, LogNormal())
    print(f"TV(pi, log-normal) = {tv:.3f}; eval loss {start:.4f} -> {end:.4f}")
    assert dist.active and tv > 0.15
    history = dist.history()
    assert 2 <= len(history) <= dist.config["history"]
    assert all(np.isfinite(s[k]).all() for s in history for k in ("mmse", "q", "gate", "rho", "pi"))
    assert end < start - 0.02, (start, end)
    path = tmp_path / "profile.png"
    plot_profile(history, path)
    assert path.stat().st_size > 10_000
    # before any refresh there is nothing to draw but the prior
    plot_profile([InfoNoise(total_steps=10).profile_snapshot()], tmp_path / "prior_only.png")
    assert (tmp_path / "prior_only.png").exists()


# ---------------------------------------------------------------------- pieces and config
def test_gate_and_smoothing_definitions():
    u = U
    assert gate_sigma(u, gaussian_mmse(SIG) / SIG ** 2, P_GATE) == 0.0          # monotone: no gate
    bump = np.exp(-(u + 1.0) ** 2)                                                # q/max = p at -1 -+ sqrt(ln 1/p)
    c = gate_sigma(u, bump, P_GATE)
    assert math.log(c) == pytest.approx(-1.0 - math.sqrt(math.log(1 / P_GATE)), abs=H ** 2)
    spurious = bump + np.where(u < -6, 0.5, 0.0)                                 # a rise at the low end
    assert gate_sigma(u, spurious, P_GATE) == pytest.approx(c, rel=1e-12)       # cut at the first drop
    assert gate_sigma(u, np.where(u < -6, 1.0, 1e-6), P_GATE) == 0.0              # band reaches sigma_min
    assert gate(np.array([c]), c, 3.0)[0] == pytest.approx(0.5)
    assert (gate(SIG, 0.0, 3.0) == 1.0).all()
    line = 0.3 * np.arange(50) - 2
    np.testing.assert_allclose(smooth_local_linear(line, 2.0), line, atol=1e-9)  # exact on lines, ends too
    noise = np.random.default_rng(0).normal(size=500)
    assert smooth_local_linear(noise, 2.0).std() < 0.5


def test_from_spec_matches_the_schema():
    schema = yaml.safe_load((Path(__file__).parents[1] / "diffrepro/pipeline/params.schema.yaml").read_text())
    keys = set(schema["$defs"]["sigma_dist"]["properties"]) - {"kind"}
    assert set(DEFAULTS) == keys
    dist = build_sigma_dist({"kind": "infonoise", "bins": 64, "warmup_frac": 0.1}, total_steps=500)
    assert isinstance(dist, InfoNoise) and dist.bins == 64 and dist.warmup_steps == 50 and dist.refresh_every == 5
    with pytest.raises(ValueError, match="unknown InfoNoise parameters"):
        InfoNoise.from_spec({"bogus": 1}, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        InfoNoise.from_spec({}, total_steps=None)
