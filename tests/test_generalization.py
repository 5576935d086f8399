"""Generalization gap per noise level (methods.md section 5 (a), claim K2): fixed, paired noise draws;
a closed-form Gaussian oracle; the ideal denoiser of 8 real Fashion-MNIST images (an exact memorizer)
against closed forms; and a tiny U-Net trained with the real training loop to memorize a handful of
images, whose gap vanishes at small sigma and peaks at intermediate sigma."""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from diffrepro.data import DatasetError, load_fashion_mnist
from diffrepro.ideal import IdealDenoiser, gaussian_denoiser
from diffrepro.loss import DenoisingLoss
from diffrepro.metrics.generalization import (NOISE_BLOCK, denoising_errors, gap_curves, noise_rows, plot_gap,
                                              sigma_grid, subset_indices, summarize_gap)
from diffrepro.nets import build_network
from diffrepro.precond import EDMPrecond
from diffrepro.sigma_dist import LogNormal
from diffrepro.training import TrainConfig, Trainer

SIGMAS = sigma_grid(12)   # 0.002 ... 80, uniform in ln(sigma)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fmnist16():
    """The first 72 Fashion-MNIST test images at 16x16 in [-1, 1] (28 -> 32 by padding with the
    background value -1, then 2x2 average pooling), NCHW."""
    try:
        raw = load_fashion_mnist("test")
    except DatasetError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    x = torch.from_numpy(np.ascontiguousarray(raw.images[:72])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), value=-1.0), 2)


class Recorder:
    """A row-wise denoiser (x / (1 + sigma^2)) that records every input it is called with."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, class_labels=None):
        self.calls.append((x.clone(), sigma))
        return x / (1 + sigma ** 2)


# ---------------------------------------------------------------------------------------------------
# fixed, paired noise

def test_train_and_heldout_see_the_same_noise_tensors():
    g = torch.Generator().manual_seed(0)
    train, heldout = torch.randn(5, 3, 4, 4, generator=g), torch.randn(7, 3, 4, 4, generator=g)
    sigmas, seed, n_per_set, repeats, batch = [0.1, 1.0], 11, 5, 3, 4
    rec = Recorder()
    denoising_errors(rec, train, heldout, sigmas, n_per_set=n_per_set, repeats=repeats, seed=seed, batch_size=batch)
    rows = n_per_set * repeats
    ex_train = subset_indices(5, n_per_set, seed)      # whole set, in order
    ex_held = subset_indices(7, n_per_set, seed)       # a seeded subset of 5 of the 7
    assert torch.equal(ex_train, torch.arange(5)) and len(set(ex_held.tolist())) == 5
    calls = iter(rec.calls)
    for j, sigma in enumerate(sigmas):
        for start in range(0, rows, batch):
            m = torch.arange(start, min(start + batch, rows))
            noise = noise_rows(seed, j, start, start + len(m), train.shape[1:])
            (x_t, s_t), (x_h, s_h) = next(calls), next(calls)
            assert s_t == s_h == sigma
            y_t, y_h = train[ex_train[m % 5]], heldout[ex_held[m % 5]]
            # the same noise tensor, exactly, for both sets
            assert torch.equal(x_t, y_t + sigma * noise) and torch.equal(x_h, y_h + sigma * noise)
    assert next(calls, None) is None


def test_noise_depends_only_on_seed_sigma_index_and_row():
    shape = (2, 3)
    full = noise_rows(5, 1, 0, 600, shape)
    assert torch.equal(noise_rows(5, 1, 0, 10, shape), full[:10])                                  # prefix
    a, b = NOISE_BLOCK - 6, NOISE_BLOCK + 9                                                       # across blocks
    assert torch.equal(noise_rows(5, 1, a, b, shape), full[a:b])
    assert not torch.equal(noise_rows(5, 2, 0, 10, shape), full[:10])                              # other sigma
    assert not torch.equal(noise_rows(6, 1, 0, 10, shape), full[:10])                              # other seed


def test_repeated_calls_are_identical_and_batch_size_free():
    g = torch.Generator().manual_seed(1)
    train, heldout = torch.randn(40, 8, generator=g), torch.randn(60, 8, generator=g) * 1.3
    D = gaussian_denoiser(torch.zeros(8), 1.0)
    kw = dict(n_per_set=30, repeats=2, seed=3)
    a = denoising_errors(D, train, heldout, SIGMAS, batch_size=16, **kw)
    b = denoising_errors(D, train, heldout, SIGMAS, batch_size=16, **kw)
    c = denoising_errors(D, train, heldout, SIGMAS, batch_size=500, **kw)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(a, c, check_exact=True)
    d = denoising_errors(D, train, heldout, SIGMAS, batch_size=16, n_per_set=30, repeats=2, seed=4)
    assert not np.array_equal(a["mse_train"], d["mse_train"])
    assert (a["n_train"] == 30).all() and (a["rows"] == 60).all()


def test_train_equal_to_heldout_gives_exactly_zero_gap():
    torch.manual_seed(0)
    net = EDMPrecond(build_network("tiny", channels=1, img_resolution=8)).eval()
    data = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for n_per_set in (20, 12):                      # the whole set, and a seeded subset
        df = denoising_errors(net, data, data, SIGMAS[::3], n_per_set=n_per_set, repeats=2, batch_size=16)
        assert (df["gap"] == 0).all() and (df["se_gap"] == 0).all()
        assert (df["mse_train"] > 0).all()


def test_dropout_is_off_during_evaluation_and_the_mode_restored():
    torch.manual_seed(0)
    net = EDMPrecond(build_network("tiny", channels=1, img_resolution=8, dropout=0.5)).train()
    data = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a = denoising_errors(net, data, data.flip(0), SIGMAS[::4], n_per_set=6)
    b = denoising_errors(net, data, data.flip(0), SIGMAS[::4], n_per_set=6)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert net.training


def test_mse_matches_closed_form_for_gaussian_data():
    """Data N(0, s^2 I) and its ideal denoiser: per-dimension MSE = s^2 sigma^2 / (s^2 + sigma^2)."""
    s, d, n = 0.7, 16, 1500
    g = torch.Generator().manual_seed(2)
    train, heldout = s * torch.randn(n, d, generator=g), s * torch.randn(n, d, generator=g)
    df = denoising_errors(gaussian_denoiser(torch.zeros(d), s), train, heldout, SIGMAS, n_per_set=n, batch_size=512)
    expected = s ** 2 * SIGMAS ** 2 / (s ** 2 + SIGMAS ** 2)
    for col, se in (("mse_train", "se_train"), ("mse_heldout", "se_heldout")):
        z = (df[col] - expected) / df[se]
        assert (z.abs() < 4).all(), z.to_numpy()
    assert (df["gap"].abs() < 4 * df["se_gap"] + 1e-12).all()      # no overfitting: the model never saw the data


# ---------------------------------------------------------------------------------------------------
# summaries and plots

def test_summarize_gap_finds_the_peak_per_step(tmp_path):
    sig = SIGMAS
    bump = 0.1 * np.exp(-0.5 * (np.log(sig) - 0.0) ** 2)          # peak at sigma = 1
    rows = []
    for step, gap in ((100, bump), (200, 0.2 - 0.01 * np.arange(12))):   # interior / at sigma_min
        rows.append(pd.DataFrame(dict(step=step, sigma_index=np.arange(12), sigma=sig, gap=gap, se_gap=0.001,
                                      mse_train=0.1, mse_heldout=0.1 + gap)))
    df = pd.concat(rows, ignore_index=True)
    s = summarize_gap(df).set_index("step")
    assert s.loc[100, "peak_interior"] and s.loc[100, "peak_clear"]
    assert s.loc[100, "peak_sigma"] == pytest.approx(sig[np.argmax(bump)])
    assert not s.loc[200, "peak_interior"] and not s.loc[200, "peak_clear"] and s.loc[200, "peak_index"] == 0
    assert s.loc[200, "peak_margin"] == 0 and s.loc[200, "gap_min_sigma"] == pytest.approx(0.2)
    plot_gap(df, tmp_path / "gap.png")
    assert (tmp_path / "gap.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------
# real images: the exact memorizer and a trained memorizer

def test_ideal_memorizer_gap_matches_closed_forms(fmnist16):
    """The ideal denoiser of 8 images snaps held-out inputs to their nearest training image at small sigma:
    gap(sigma_min) = mean_h min_j ||y_h - y_j||^2 / d exactly, the largest value of the curve (its maximum is
    on that small-sigma plateau, not at intermediate sigma); at sigma -> inf it returns the training mean,
    gap -> (mean_h ||y_h - ybar||^2 - mean_t ||y_t - ybar||^2) / d (about 2 var / N: the mean is fitted too)."""
    train, heldout = fmnist16[:8], fmnist16[8:]
    d = train[0].numel()
    df, per_ex = denoising_errors(IdealDenoiser(train), train, heldout, SIGMAS, n_per_set=64, repeats=2,
                                  per_example=True)
    nn_gap = torch.cdist(heldout.flatten(1).double(), train.flatten(1).double()).min(1).values.pow(2).mean() / d
    ybar = train.double().mean(0)
    mean_gap = ((heldout - ybar).pow(2).flatten(1).sum(1).mean() - (train - ybar).pow(2).flatten(1).sum(1).mean()) / d
    small = df["sigma"] < 0.1
    assert (df.loc[small, "mse_train"] < 1e-12).all()
    assert df["gap"].iloc[0] == pytest.approx(float(nn_gap), rel=1e-5)
    assert df["gap"].iloc[-1] == pytest.approx(float(mean_gap), rel=0.05)
    assert (df["gap"] > 0).all()
    s = summarize_gap(df, per_ex).iloc[0]
    assert df["gap"].iloc[0] >= 0.99 * s["peak_gap"] and not s["peak_clear"]
    print("ideal memorizer gap:", np.round(df["gap"].to_numpy(), 4),
          f"nn {float(nn_gap):.4f} mean {float(mean_gap):.4f}")


def _symmetric_set(images: torch.Tensor) -> torch.Tensor:
    """Images scaled to RMS sigma_data = 0.5, plus their negatives: mean exactly 0, equal norms."""
    x = images * (0.5 / images.pow(2).mean((1, 2, 3), keepdim=True).sqrt())
    return torch.cat([x, -x])


@pytest.mark.integration
def test_trained_memorizer_gap_peaks_at_intermediate_sigma(fmnist16, tmp_path):
    """A tiny U-Net trained with the real loop (EDM precond, log-normal sigma) on 8 training images.

    With N = 8 plain images the gap at large sigma tends to the mean-fitting term 2 var / N (about 0.08
    here, see the oracle test), as large as the memorization gap a CPU-sized run reaches, so the peak is
    not resolvable against the sigma_max end. The training and held-out sets are therefore built
    sign-symmetric with equal norms (4 images and their negatives; held-out: 32 others and their
    negatives): both means are exactly 0 and every example is equally far from it, so that term is 0 and
    the curve shows the memorization gap alone. Expected (K2): ~0 at small sigma (c_skip -> 1: any finite
    network is close to the identity there), positive and peaking at intermediate sigma, ~0 at large sigma.
    The ideal denoiser of the same 8 images (the exact memorizer) is the oracle: its gap is largest at
    small sigma, and no sigma's training MSE of the network beats its Bayes-optimal training MSE.
    """
    train, heldout = _symmetric_set(fmnist16[:4]), _symmetric_set(fmnist16[8:40])
    torch.manual_seed(0)
    net = build_network("tiny", channels=1, img_resolution=16)
    cfg = TrainConfig(steps=240, batch_size=32, lr=3e-3, ema_halflife_img=500, ema_rampup_ratio=None,
                      checkpoint_every=240, log_every=240, seed=0)
    trainer = Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), train, cfg, progress=False)
    trainer.run()
    model = trainer.ema.model.eval()
    kw = dict(n_per_set=64, repeats=2, batch_size=128, per_example=True)
    df, per_ex = gap_curves({cfg.steps: model}, train, heldout, SIGMAS, **kw)
    ideal, ideal_ex = denoising_errors(IdealDenoiser(train), train, heldout, SIGMAS, **kw)
    s = summarize_gap(df, per_ex).iloc[0]
    si = summarize_gap(ideal, ideal_ex).iloc[0]
    print("trained gap:", np.round(df["gap"].to_numpy(), 4))
    print("ideal gap:  ", np.round(ideal["gap"].to_numpy(), 4))
    print(s.to_dict())

    gap = df["gap"].to_numpy()
    assert s["peak_interior"] and 0.1 < s["peak_sigma"] < 5, s
    assert s["peak_gap"] > 2.5 * max(abs(gap[0]), abs(gap[-1])), s
    assert abs(gap[0]) < 0.01 * s["peak_gap"]                           # identity at small sigma
    rising = (df["sigma"] > 0.01) & (df["sigma"] <= s["peak_sigma"])
    assert (df.loc[rising, "gap"] > 0).all()
    # oracle: the exact memorizer's gap is largest at small sigma and above the network's everywhere there
    assert not si["peak_clear"] and ideal["gap"].iloc[0] >= 0.99 * si["peak_gap"]
    assert ideal["gap"].iloc[0] > s["peak_gap"]
    assert abs(ideal["gap"].iloc[-1]) < 0.01                             # no mean-fitting term by construction
    # D* is the posterior mean of the training distribution: no lower training MSE at any sigma
    slack = 3 * np.hypot(df["se_train"], ideal["se_train"]) + 1e-9
    assert (df["mse_train"] >= ideal["mse_train"] - slack).all()
    plot_gap(pd.concat([df, ideal.assign(step=-1)]), tmp_path / "gap.png",
             title=f"trained ({cfg.steps} steps) vs ideal (-1)")
    assert (tmp_path / "gap.png").stat().st_size > 1000
