"""Sparse supervision (methods.md section 2): the loss mask against its oracles.

  * eta = 0 is exactly the baseline (loss and every gradient, torch.equal);
  * the normalized masked loss is an unbiased estimate of the full loss (tolerance: 4.5 standard
    errors of the Monte-Carlo mean over 2,000 masks); realized keep fractions match 1 - eta within
    4.5 binomial standard errors; mask structure per kind;
  * the paper's masked-covariance identity on real Fashion-MNIST: conditional on the (centred) data,
    E_mask[S_masked] = (1-eta)^2 S + eta(1-eta) diag(S) exactly, so the only error is mask sampling,
    whose variance is known in closed form (masked_covariance_mask_variance);
  * training at eta = 0.98 lowers the full (unmasked) held-out loss; 'kept' normalization stays finite
    when a sample keeps no pixel.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from diffrepro.data import load_fashion_mnist, to_resolution
from diffrepro.data import fashion_mnist as fm
from diffrepro.loss import DenoisingLoss
from diffrepro.methods import build_objective
from diffrepro.methods.sparse import (SparseMask, build_mask_fn, masked_covariance, masked_covariance_mask_variance,
                                      predicted_masked_covariance)
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.sigma_dist import LogNormal
from diffrepro.training import Trainer, TrainConfig

needs_fmnist = pytest.mark.skipif(not fm.DEBIAN_DIR.is_dir(),
                                  reason="needs Debian's dataset-fashion-mnist (apt install dataset-fashion-mnist)")
Z = 4.5   # standard errors allowed in the Monte-Carlo checks (two-sided p ~ 7e-6 per check, fixed seeds)
N_MASKS = 2000


@pytest.fixture(scope="module")
def fmnist():
    """The 10,000-image Fashion-MNIST test split (the smallest real split; any 10k images would do)."""
    return load_fashion_mnist("test").images



def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _tiny_unet(res=8, seed=0, **kw):
    torch.manual_seed(seed)
    return EDMPrecond(build_network("tiny", channels=1, img_resolution=res, **kw))


# --- arguments and the params entry ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(ratio=1.0), r"\[0, 1\)"), (dict(ratio=-0.1), r"\[0, 1\)"), (dict(ratio=float("nan")), "number"),
    (dict(ratio=True), "number"), (dict(ratio="0.5"), "number"),
    (dict(ratio=0.5, kind="row"), "kind"), (dict(ratio=0.5, normalize="mean"), "normalization"),
    (dict(ratio=0.5, kind="patch", patch_size=0), "patch_size"),
    (dict(ratio=0.5, kind="patch", patch_size=2.0), "patch_size"),
])
def test_build_mask_fn_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_mask_fn(**kwargs)


def test_patch_mask_needs_images_and_params_entry_builds_it():
    with pytest.raises(ValueError, match="images"):
        build_mask_fn(0.5, kind="patch")((4, 10), _gen())
    loss = build_objective({"precond": "edm", "mask": {"ratio": 0.9, "kind": "patch", "patch_size": 2,
                                                       "normalize": "kept"}}, torch.zeros(1, 1, 4, 4))
    assert loss.mask_fn == SparseMask(0.9, "patch", 2, "kept")


# --- eta = 0 is the baseline -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, normalize", [("pixel", "unbiased"), ("element", "kept"), ("patch", "kept")])
def test_ratio_zero_gives_exact_baseline_loss_and_gradients(kind, normalize, one_thread):
    y = torch.rand(6, 1, 8, 8, generator=_gen(1)) * 2 - 1
    sigma = LogNormal().sample(6, _gen(2))
    noise = torch.randn(y.shape, generator=_gen(3))
    results = []
    for mask_fn in (None, build_mask_fn(0.0, kind=kind, normalize=normalize)):
        den = _tiny_unet(seed=0)
        out = DenoisingLoss(LogNormal(), mask_fn=mask_fn)(den, y, _gen(4), sigma=sigma, noise=noise)
        out.reduce().backward()
        results.append((out.loss.detach(), [p.grad.clone() for p in den.parameters()]))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.equal(loss0, loss1)
    assert len(grads0) == len(grads1) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads0, grads1))
    mask, keep = build_mask_fn(0.0, kind=kind, normalize=normalize)(y.shape, _gen())
    assert torch.equal(mask, torch.ones_like(y)) and keep == 1.0


# --- mask structure and randomness -----------------------------------------------------------------

def test_masks_come_only_from_the_generator():
    fn = build_mask_fn(0.5, kind="pixel")
    torch.manual_seed(1)
    a, _ = fn((8, 3, 16, 16), _gen(7))
    torch.manual_seed(2)          # the global RNG must not matter
    b, _ = fn((8, 3, 16, 16), _gen(7))
    c, _ = fn((8, 3, 16, 16), _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = _gen(7)
    first, _ = fn((8, 3, 16, 16), g)
    second, _ = fn((8, 3, 16, 16), g)
    assert not torch.equal(first, second)          # a fresh mask per call (training step)
    assert a.dtype == torch.float32 and set(a.unique().tolist()) == {0.0, 1.0}


def test_pixel_masks_are_shared_across_channels_and_fresh_per_sample():
    mask, keep = build_mask_fn(0.5)((16, 3, 8, 8), _gen())
    assert keep == 0.5
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    assert all(not torch.equal(mask[0], mask[i]) for i in range(1, 16))
    elem, _ = build_mask_fn(0.5, kind="element")((16, 3, 8, 8), _gen())
    assert not torch.equal(elem[:, 0], elem[:, 1])
    vec, _ = build_mask_fn(0.5)((16, 10), _gen())     # vectors (MLP on 2D toys): one draw per coordinate
    assert vec.shape == (16, 10) and 0 < vec.mean() < 1


@pytest.mark.parametrize("H, W, k", [(8, 8, 4), (10, 7, 4), (5, 5, 5), (6, 6, 1)])
def test_patch_masks_are_constant_within_patches_of_a_cropped_grid(H, W, k):
    mask, _ = build_mask_fn(0.5, kind="patch", patch_size=k)((64, 2, H, W), _gen())
    assert mask.shape == (64, 2, H, W)
    assert torch.equal(mask, mask[:, :1].expand_as(mask))
    gh, gw = math.ceil(H / k), math.ceil(W / k)
    grid = torch.zeros(64, gh, gw)
    for i, j in itertools.product(range(gh), range(gw)):
        block = mask[:, 0, i * k:(i + 1) * k, j * k:(j + 1) * k].flatten(1)   # cropped at the border
        assert torch.equal(block.min(1).values, block.max(1).values)
        grid[:, i, j] = block[:, 0]
    assert 0.3 < grid.mean() < 0.7 and grid.std() > 0.3   # patches are drawn independently


@pytest.mark.parametrize("kind", ["pixel", "element", "patch"])
def test_realized_keep_fraction_at_eta_098(kind):
    eta, shape = 0.98, (N_MASKS * 4, 3, 16, 16)
    mask, _ = build_mask_fn(eta, kind=kind, patch_size=4)(shape, _gen(11))
    units = {"pixel": N_MASKS * 4 * 16 * 16, "element": N_MASKS * 4 * 3 * 16 * 16, "patch": N_MASKS * 4 * 16}[kind]
    p = 1 - eta
    se = math.sqrt(p * (1 - p) / units)          # binomial standard error over the independent draws
    frac = mask.mean().item()
    print(f"{kind}: keep fraction {frac:.5f} (1-eta = {p:.2f}, SE {se:.1e})")
    assert abs(frac - p) < Z * se, (frac, p, se)


# --- unbiasedness ----------------------------------------------------------------------------------

def _masked_estimates(mask_fn, per_element_loss, n_masks=N_MASKS, seed=0):
    """n_masks Monte-Carlo draws of the batch loss sum(loss * mask / keep) for a fixed per-element loss
    (B, ...): one call with n_masks * B samples is n_masks independent masks of the batch."""
    B = per_element_loss.shape[0]
    rep = per_element_loss.repeat(n_masks, *([1] * (per_element_loss.ndim - 1)))
    mask, keep = mask_fn(rep.shape, _gen(seed))
    masked = (rep * mask / keep).flatten(1).sum(1).double()
    assert torch.isfinite(masked).all()
    return masked.reshape(n_masks, B).sum(1)


def _fixed_loss(shape, seed=5):
    g = _gen(seed)
    D, target = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    weight = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=g) * 10 + 1   # lambda(sigma) per sample
    return weight * (D - target) ** 2


@pytest.mark.parametrize("kind, shape", [("pixel", (4, 3, 16, 16)), ("element", (4, 3, 16, 16)),
                                         ("patch", (4, 3, 16, 16)), ("patch", (4, 3, 10, 10))])
@pytest.mark.parametrize("eta", [0.5, 0.9, 0.98])
def test_unbiased_normalization_is_unbiased(kind, shape, eta):
    loss = _fixed_loss(shape)
    full = loss.sum().item()
    fn = build_mask_fn(eta, kind=kind, patch_size=4)
    est = _masked_estimates(fn, loss)
    se = est.std().item() / math.sqrt(N_MASKS)
    err = est.mean().item() - full
    print(f"{kind} {shape[-1]}px eta={eta}: full {full:.2f} mean {est.mean():.2f} err/SE {err / se:+.2f}")
    assert abs(err) < Z * se, (full, est.mean().item(), se)
    # the check has power: forgetting the 1/(1-eta) normalization is rejected by far
    raw = est.mean().item() * (1 - eta)
    assert abs(raw - full) > 3 * Z * se


@pytest.mark.parametrize("kind, eta", [("pixel", 0.5), ("pixel", 0.98), ("patch", 0.5), ("patch", 0.98)])
def test_kept_normalization_is_the_mean_over_kept_pixels(kind, eta):
    """'kept' rescales each sample by #elements / #kept. Given the number of kept units (all of equal
    size here), the kept set is uniform, so the mean over kept elements is unbiased; a sample with
    nothing kept scores 0. Hence E = (1 - eta^U) * full, U = mask units per sample (8x8, k=4: U = 4)."""
    shape = (4, 3, 8, 8)
    U = {"pixel": 64, "patch": 4}[kind]
    loss = _fixed_loss(shape)
    full = loss.sum().item()
    fn = build_mask_fn(eta, kind=kind, patch_size=4, normalize="kept")
    mask, keep = fn(shape, _gen())
    assert keep.shape == (4, 1, 1, 1)
    kept = mask.flatten(1).mean(1)
    assert torch.equal(keep.flatten(), torch.where(kept > 0, kept, torch.ones_like(kept)))
    est = _masked_estimates(fn, loss)
    expected = (1 - eta ** U) * full
    se = est.std().item() / math.sqrt(N_MASKS)
    print(f"kept {kind} eta={eta}: expected {expected:.2f} mean {est.mean():.2f} err/SE {(est.mean() - expected) / se:+.2f}")
    assert abs(est.mean().item() - expected) < Z * se


def test_kept_normalization_with_zero_kept_samples_is_finite(one_thread):
    """eta = 0.98 on 8x8 images with 4x4 patches: P(a sample keeps nothing) = 0.98^4 = 0.92."""
    y = torch.rand(32, 1, 8, 8, generator=_gen(1)) * 2 - 1
    fn = build_mask_fn(0.98, kind="patch", patch_size=4, normalize="kept")
    sigma = LogNormal().sample(32, _gen(3))
    noise = torch.randn(y.shape, generator=_gen(4))
    den = _tiny_unet()
    out = DenoisingLoss(LogNormal(), mask_fn=fn)(den, y, _gen(2), sigma=sigma, noise=noise)
    total = out.reduce()
    total.backward()
    mask, keep = fn(y.shape, _gen(2))     # sigma and noise were given: the generator drew only the mask
    per_sample = out.loss.detach().flatten(1).sum(1)
    empty = mask.flatten(1).sum(1) == 0
    assert torch.isfinite(out.loss).all() and torch.isfinite(total)
    assert torch.isfinite(keep).all() and (keep > 0).all()
    assert all(torch.isfinite(p.grad).all() for p in den.parameters())
    assert 0 < empty.sum() < 32      # both cases occur in this batch (checked for this seed)
    assert (per_sample[empty] == 0).all() and (per_sample[~empty] > 0).all()


# --- the masked-covariance identity on real data ---------------------------------------------------

def test_covariance_identity_oracle_by_enumerating_masks():
    """Exact expectation over all 2^D masks (D = 4) of (m*x)(m*x)^T equals the identity."""
    x = torch.randn(5, 4, generator=_gen(), dtype=torch.float64)
    eta, p = 0.3, 0.7
    S = x.T @ x / 5
    expect = torch.zeros(4, 4, dtype=torch.float64)
    for bits in itertools.product([0.0, 1.0], repeat=4):
        m = torch.tensor(bits, dtype=torch.float64)
        prob = p ** m.sum() * eta ** (4 - m.sum())
        expect += prob * (x * m).T @ (x * m) / 5
    torch.testing.assert_close(predicted_masked_covariance(S, eta), expect, rtol=1e-12, atol=1e-12)


@needs_fmnist
@pytest.mark.parametrize("eta", [0.5, 0.9])
def test_covariance_identity_on_fashion_mnist(fmnist, eta):
    """10,000 real images at 28x28 in [-1, 1], centred (so S = E[x x^T] is their covariance), 2 masks each.
    Given the data, E_mask[S_masked] = predicted exactly, and E||S_masked - predicted||_F^2 = sum of
    the closed-form per-entry mask variances. Tolerance: the Frobenius error of the diagonal and of the
    off-diagonal part must be within [0.7, 1.3] x that analytic RMS (its squared value is a sum of 784
    resp. ~600k weakly dependent terms: the ratio has a relative spread of ~3% resp. < 1%)."""
    x = torch.from_numpy(fmnist).reshape(len(fmnist), -1).to(torch.float64) / 127.5 - 1
    n_masks = 2
    S, S_masked = masked_covariance(x, eta, n_masks=n_masks, generator=_gen(int(eta * 100)))
    pred = predicted_masked_covariance(S, eta)
    var = masked_covariance_mask_variance(x, eta, n_masks=n_masks)
    diag = torch.eye(S.shape[0], dtype=torch.bool)
    p = 1 - eta
    # the naive guess each part must reject: variances x (1-eta)^2, resp. covariances x (1-eta)
    for name, sel, naive in (("diagonal", diag, p * p * S), ("off-diagonal", ~diag, p * S)):
        rms = var[sel].sum().sqrt().item()
        err = (S_masked - pred)[sel].norm().item()
        rel = err / pred[sel].norm().item()
        print(f"eta={eta} {name}: |S_masked - pred|_F = {err:.4f}, analytic RMS {rms:.4f} "
              f"(ratio {err / rms:.3f}), relative error {rel:.4f}")
        assert 0.7 * rms < err < 1.3 * rms, (name, err, rms)
        naive_err = (S_masked - naive)[sel].norm().item()
        print(f"    naive guess: error {naive_err / rms:.1f} x RMS")
        assert naive_err > 10 * rms
    # covariances shrink by (1-eta)^2, variances by (1-eta): correlations shrink by (1-eta)
    off = ~diag
    var_slope = (S_masked.diagonal() @ S.diagonal() / (S.diagonal() @ S.diagonal())).item()
    cov_slope = (S_masked[off] @ S[off] / (S[off] @ S[off])).item()
    live = S.diagonal() > 1e-3 * S.diagonal().max()       # drop (nearly) constant border pixels
    corr = S[live][:, live] / torch.outer(S.diagonal()[live], S.diagonal()[live]).sqrt()
    corr_m = S_masked[live][:, live] / torch.outer(S_masked.diagonal()[live], S_masked.diagonal()[live]).sqrt()
    o = ~torch.eye(int(live.sum()), dtype=torch.bool)
    corr_slope = (corr_m[o] @ corr[o] / (corr[o] @ corr[o])).item()
    print(f"eta={eta}: variance factor {var_slope:.4f} (1-eta = {p:.2f}), covariance factor {cov_slope:.4f} "
          f"((1-eta)^2 = {p * p:.4f}), correlation factor {corr_slope:.4f}")
    assert var_slope == pytest.approx(p, rel=0.02)
    assert cov_slope == pytest.approx(p * p, rel=0.02)
    assert corr_slope == pytest.approx(p, rel=0.05) and corr_slope < 1


# --- training end to end ---------------------------------------------------------------------------

@needs_fmnist
def test_training_at_eta_098_lowers_the_full_heldout_loss(fmnist, one_thread):
    """A tiny U-Net (8 base channels, no attention) on 512 real images at 16x16 (PIL bicubic), 60
    steps of batch 32 with 98% of pixels masked; evaluated with the FULL loss on 128 held-out images
    at fixed sigma (log-spaced 0.05..5) and fixed noise."""
    imgs, _ = to_resolution(fmnist[:640], 16)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    train, heldout = x[:512], x[512:]
    sigma = torch.logspace(math.log10(0.05), math.log10(5.0), len(heldout))
    noise = torch.randn(heldout.shape, generator=_gen(7))
    full_loss = DenoisingLoss(LogNormal())

    def heldout_loss(den):
        with torch.no_grad():
            return full_loss(den, heldout, _gen(), sigma=sigma, noise=noise).reduce().item()

    den = _tiny_unet(res=16, model_channels=8, attn_resolutions=())
    cfg = TrainConfig(steps=60, batch_size=32, lr=3e-3, ema_halflife_img=1000, checkpoint_every=60, log_every=60)
    tr = Trainer(den, DenoisingLoss(LogNormal(), mask_fn=build_mask_fn(0.98)), train, cfg, progress=False)
    before = heldout_loss(tr.denoiser)
    tr.run()
    after = heldout_loss(tr.denoiser)
    train_loss = [r["value"] for r in tr.state.metrics if r["metric"] == "train_loss"]
    print(f"full held-out loss: before {before:.2f} after {after:.2f} (ratio {after / before:.3f}); "
          f"masked train loss {train_loss}")
    assert all(np.isfinite(train_loss))
    assert after < 0.75 * before, (before, after)
