import numpy as np
import pytest
import torch
from torch import nn

from diffrepro.ema import EMA, ema_beta
from diffrepro.toy2d import TOY_DATASETS, make_toy


def test_ema_beta_formula():
    assert ema_beta(512, 10_000_000, 500_000, 0.05) == pytest.approx(0.5 ** (512 / 500_000))
    assert ema_beta(512, 1_000_000, 500_000, 0.05) == pytest.approx(0.5 ** (512 / 50_000))   # ramp-up
    assert ema_beta(512, 1, 500_000, None) == pytest.approx(0.5 ** (512 / 500_000))


def test_ema_matches_closed_form():
    """Constant target c, EMA starting at 0, constant beta: ema_n = c (1 - beta^n); after one
    half-life's worth of images, exactly half-way."""
    net = nn.Linear(3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    ema = EMA(net, halflife_nimg=1000, rampup_ratio=None)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(2.0)
    B, n = 10, 100  # 100 steps of 10 images = one half-life
    for k in range(1, n + 1):
        ema.update(net, B, k * B)
    for p in ema.model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 1.0), rtol=1e-5, atol=1e-6)
    beta = 0.5 ** (B / 1000)
    for k in range(n + 1, n + 51):
        ema.update(net, B, k * B)
    expected = 2.0 * (1 - beta ** (n + 50))
    for p in ema.model.parameters():
        torch.testing.assert_close(p, torch.full_like(p, expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_toy_datasets_are_seeded_and_scaled(name):
    a, b, c = make_toy(name, 4000, seed=3), make_toy(name, 4000, seed=3), make_toy(name, 4000, seed=4)
    assert a.shape == (4000, 2) and a.dtype == np.float32
    assert np.array_equal(a, b)
    if name != "two_points":
        assert not np.array_equal(a, c)
    assert 0.3 < a.std() < 0.6
    with pytest.raises(ValueError, match="unknown toy dataset"):
        make_toy("moons?", 10)
