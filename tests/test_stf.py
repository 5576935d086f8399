"""Stable Target Field: checked against the definition (direct float64 differences), the ideal
denoiser of the training set (R = whole set), the baseline (|R| = 1), and, by enumerating every
reference draw, the identity E[target | x] = D*(x) that makes the variance figure well defined.
The variance claim (T1) is checked on real Fashion-MNIST images."""
import itertools

import numpy as np
import pytest
import torch

from diffrepro.ideal import IdealDenoiser
from diffrepro.loss import DenoisingLoss
from diffrepro.methods import build_objective
from diffrepro.methods.stf import StableTargetField, build_target_fn
from diffrepro.methods.stf_analysis import plot_target_variance, target_covariance_trace
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.sigma_dist import LogNormal

SIGMAS = [1e-4, 0.01, 0.3, 3.0, 1e3]


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=200, shape=(3, 4, 4), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _noisy(data, idx, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = data[idx]
    sigma = torch.as_tensor(sigma, dtype=data.dtype).expand(len(idx)).clone()
    return y, y + sigma.reshape(-1, *[1] * (y.ndim - 1)) * torch.randn(y.shape, generator=g, dtype=y.dtype), sigma


def brute_force(x, members, sigma):
    """sum_k softmax_k(-||x - r_k||^2 / 2 sigma^2) r_k over an explicit list of members, direct differences."""
    x, members = x.reshape(-1).double(), members.reshape(len(members), -1).double()
    w = torch.softmax(-((x - members) ** 2).sum(1) / (2 * float(sigma) ** 2), 0)
    return w @ members


# ---------------------------------------------------------------------------- limits |R| = 1 and |R| >= N
@pytest.mark.parametrize("sigma", SIGMAS)
def test_ref_batch_one_is_the_baseline_target_bitwise(sigma):
    data = _data()
    y, x, s = _noisy(data, torch.arange(0, 200, 7), sigma)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    out = StableTargetField(data, ref_batch=1)(y, x, s, g)
    assert torch.equal(out, y)
    assert torch.equal(g.get_state(), state)        # no draw: later draws of the step are the baseline's


@pytest.mark.parametrize("ref_batch", [200, 10_000])
def test_whole_training_set_is_the_ideal_denoiser(ref_batch):
    data64 = _data(dtype=torch.float64)
    idx = torch.arange(0, 200, 9)
    stf64 = StableTargetField(data64, ref_batch=ref_batch, dtype=torch.float64)
    stf32 = StableTargetField(data64.float(), ref_batch=ref_batch)
    ideal = IdealDenoiser(data64)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    for sigma in SIGMAS:
        y, x, s = _noisy(data64, idx, sigma)
        ref = ideal(x, s)
        torch.testing.assert_close(stf64(y, x, s, g), ref, rtol=1e-10, atol=1e-12)
        # float32 matmuls: measured max error ~1e-6 on values in [-1, 1]
        torch.testing.assert_close(stf32(y.float(), x.float(), s.float(), g).double(), ref, rtol=0, atol=1e-5)
    assert torch.equal(g.get_state(), state)
    # one batch mixing every sigma; and noisy points whose clean image is not a training image: still D*
    s = torch.tensor(SIGMAS * 4, dtype=torch.float64)
    y = _data(n=len(s), seed=5, dtype=torch.float64)
    x = y + s[:, None, None, None] * torch.randn(y.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(stf64(y, x, s, g), ideal(x, s), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------- the definition, 1 < |R| < N
def test_matches_definition_and_counts_own_image_once():
    data = _data(n=50, dtype=torch.float64)
    stf = StableTargetField(data, ref_batch=8, chunk_size=3, dtype=torch.float64)
    idx = torch.tensor([4, 11, 30])
    for sigma in (0.05, 0.7, 4.0):
        y, x, s = _noisy(data, idx, sigma)
        with_own = torch.tensor([2, 11, 17, 4, 40, 33, 30])        # holds rows 4, 11 and 30 themselves
        without = torch.tensor([2, 17, 40, 33, 8, 9, 10])
        got_with, got_without = stf.target(y, x, s, with_own), stf.target(y, x, s, without)
        for b, i in enumerate(idx.tolist()):
            members_with = data[sorted(set(with_own.tolist()) | {i})]       # own image exactly once
            members_without = torch.cat([data[without], data[i:i + 1]])
            torch.testing.assert_close(got_with[b].reshape(-1), brute_force(x[b], members_with, sigma), rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(got_without[b].reshape(-1), brute_force(x[b], members_without, sigma), rtol=1e-10, atol=1e-12)


def test_conditionally_unbiased_for_the_ideal_denoiser():
    """E[target | x] = D*(x) exactly: average over the source i ~ p(i | x) and every reference draw J.
    Counting a drawn copy of the own image twice (multiset R) would be biased: checked to be detectable."""
    N, n_ref = 6, 3
    g = torch.Generator().manual_seed(0)
    data = torch.randn(N, 3, dtype=torch.float64, generator=g)
    stf = StableTargetField(data, ref_batch=n_ref, dtype=torch.float64)
    ideal = IdealDenoiser(data)
    subsets = list(itertools.combinations(range(N), n_ref - 1))
    for sigma in (0.3, 1.0, 3.0):
        x = torch.randn(4, 3, dtype=torch.float64, generator=g)
        s = torch.full((4,), sigma, dtype=torch.float64)
        post = torch.softmax(ideal.log_weights(x, sigma), 1)                # p(i | x)
        mean_stf = torch.zeros_like(x)
        mean_double_counted = torch.zeros_like(x)
        for i in range(N):
            y = data[i].expand(4, 3)
            t = sum(stf.target(y, x, s, torch.tensor(J)) for J in subsets) / len(subsets)
            naive = sum(torch.stack([brute_force(x[b], data[list(J) + [i]], sigma) for b in range(4)])
                        for J in subsets) / len(subsets)
            mean_stf += post[:, i:i + 1] * t
            mean_double_counted += post[:, i:i + 1] * naive
        torch.testing.assert_close(mean_stf, ideal(x, s), rtol=1e-10, atol=1e-12)
        assert (mean_double_counted - ideal(x, s)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_chunk_size_does_not_change_the_result(dtype, tol):
    data = _data(n=300, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    others = torch.randperm(300, generator=g)[:99]
    for sigma in (0.05, 0.5, 2.0, 50.0):
        y, x, s = _noisy(data, torch.arange(0, 300, 13), sigma)
        outs = [StableTargetField(data, ref_batch=100, chunk_size=c, dtype=dtype).target(y, x, s, others)
                for c in (1, 13, 10_000)]
        for out in outs[1:]:
            torch.testing.assert_close(out, outs[0], rtol=0, atol=tol)


def test_softmax_is_stable_at_extreme_distances():
    data = _data(n=100)
    stf = StableTargetField(data, ref_batch=30, chunk_size=8)
    others = torch.arange(50, 79)
    y = data[:4]
    for sigma in (0.0, 1e-30, 1e-8, 1e-3):
        s = torch.full((4,), sigma)
        x = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
        out = stf.target(y, x, s, others)
        assert torch.isfinite(out).all()
        assert torch.equal(out, y)                          # the posterior sits on the own image
        far = stf.target(y, x + 50.0, s, others)           # every logit ~ -1e10/sigma^2: no overflow, no NaN
        assert torch.isfinite(far).all()
        members = torch.cat([data[others], y[:1]]).reshape(30, -1)
        nearest = members[((x[0].reshape(-1) + 50.0 - members) ** 2).sum(1).argmin()]
        torch.testing.assert_close(far[0].reshape(-1), nearest)
    huge = stf.target(y, y * 1e6, torch.full((4,), 1e-3), others)
    assert torch.isfinite(huge).all()
    flat = stf.target(y, y, torch.full((4,), 1e8), others)    # sigma -> inf: the plain mean of R
    torch.testing.assert_close(flat, (data[others].sum(0, keepdim=True) + y) / 30, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- reproducibility and wiring
def test_same_generator_seed_gives_the_same_target():
    data = _data(n=500)
    stf = build_target_fn(data, ref_batch=64, chunk_size=16)
    y, x, s = _noisy(data, torch.arange(0, 500, 11), 1.5)
    a = stf(y, x, s, torch.Generator().manual_seed(7))
    b = stf(y, x, s, torch.Generator().manual_seed(7))
    c = stf(y, x, s, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_autocast_and_matmul_precision_settings_do_not_leak_in():
    data = _data(n=300)
    stf = StableTargetField(data, ref_batch=128)
    y, x, s = _noisy(data, torch.arange(0, 300, 10), 1.0)
    others = torch.arange(1, 128)
    ref = stf.target(y, x, s, others)
    with torch.autocast("cpu", dtype=torch.bfloat16):      # training runs the loss under bf16 autocast
        assert torch.equal(stf.target(y, x, s, others), ref)


def test_build_objective_plugs_stf_into_the_loss():
    torch.manual_seed(0)
    data = _data(n=64, shape=(2,))
    denoiser = EDMPrecond(build_network("mlp-tiny", channels=2, img_resolution=2)).eval()
    y = data[:16]
    base = DenoisingLoss(LogNormal())(denoiser, y, torch.Generator().manual_seed(4))
    one = build_objective({"precond": "edm", "target": {"kind": "stf", "ref_batch": 1}}, data)
    assert torch.equal(one(denoiser, y, torch.Generator().manual_seed(4)).loss, base.loss)
    whole = build_objective({"precond": "edm", "target": {"kind": "stf", "ref_batch": 64}}, data)
    sigma, noise = torch.full((16,), 0.3), torch.randn(16, 2, generator=torch.Generator().manual_seed(5))
    out = whole(denoiser, y, torch.Generator().manual_seed(6), sigma=sigma, noise=noise)
    x = y + noise * 0.3
    with torch.no_grad():
        expected = denoiser.loss_weight(sigma)[:, None] * (denoiser(x, sigma) - IdealDenoiser(data)(x, sigma)) ** 2
    torch.testing.assert_close(out.loss.detach(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- claim T1 on real data
def test_stf_lowers_target_variance_on_fashion_mnist(tmp_path):
    from diffrepro.data import load_fashion_mnist
    raw = load_fashion_mnist("train")
    g = torch.Generator().manual_seed(0)
    sel = torch.randperm(len(raw.images), generator=g)[:2000].numpy()
    data = torch.from_numpy(raw.images[sel]).permute(0, 3, 1, 2).float() / 127.5 - 1
    df = target_covariance_trace(data, [0.1, 3.0, 5.0], ref_batch=(512,), n_samples=384, generator=g)
    row = {(r.method, r.sigma): r for r in df.itertuples()}
    print(df[["method", "ref_batch", "sigma", "trace", "ratio", "ratio_stderr"]].to_string())
    # small sigma: the posterior sits on the own image for both rules; the targets agree
    assert row["baseline", 0.1].trace < 1e-10 and abs(row["stf", 0.1].trace - row["baseline", 0.1].trace) < 1e-10
    # intermediate sigma: several images pull, STF averages them (measured 0.28-0.32 and 0.09-0.11)
    assert row["baseline", 3.0].trace > 0.02
    assert row["stf", 3.0].ratio < 0.5
    assert row["stf", 5.0].ratio < 0.25
    assert all(np.isfinite(df["trace"]))
    path = plot_target_variance(df, tmp_path / "stf_variance.png")
    assert path.stat().st_size > 10_000


def test_covariance_trace_is_zero_when_r_is_the_whole_set():
    data = _data(n=40, shape=(6,))
    g = torch.Generator().manual_seed(0)
    df = target_covariance_trace(data, [0.3, 1.0, 3.0], ref_batch=(4, 40), n_samples=200, generator=g)
    whole = df[df.ref_batch == 40]
    assert (whole["trace"] < 1e-12).all()                       # STF target = D*(x): no variance left
    base = df[df.ref_batch == 1].set_index("sigma")["trace"]
    part = df[df.ref_batch == 4].set_index("sigma")["trace"]
    assert ((part > 0) & (part < base)).all()


def test_training_with_stf_is_bit_reproducible_and_ref_batch_one_is_the_baseline_run():
    from diffrepro.training import Trainer, TrainConfig
    data = _data(n=96, shape=(2,))

    def run(ref_batch):
        torch.manual_seed(0)
        denoiser = EDMPrecond(build_network("mlp-tiny", channels=2, img_resolution=2))
        method = {"precond": "edm"} | ({"target": {"kind": "stf", "ref_batch": ref_batch}} if ref_batch else {})
        loss = build_objective(method, data)
        cfg = TrainConfig(steps=5, batch_size=16, lr=1e-3, checkpoint_every=5, log_every=5, seed=3)
        Trainer(denoiser, loss, data, cfg, progress=False).run()
        return torch.cat([p.detach().flatten() for p in denoiser.parameters()])

    a, b = run(32), run(32)
    assert torch.equal(a, b)
    baseline = run(None)
    assert torch.equal(run(1), baseline)               # |R| = 1: the baseline run, weight for weight
    assert not torch.equal(a, baseline)
