import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffrepro.sigma_dist import LogNormal, LogUniform, VPTraining


def test_lognormal_log_sigma_moments():
    g = torch.Generator().manual_seed(0)
    s = LogNormal(-1.2, 1.2).sample(400_000, g).double().log()
    assert s.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert s.std().item() == pytest.approx(1.2, abs=0.01)
    # and its density integrates to one over ln sigma
    grid = torch.linspace(-10, 8, 20001, dtype=torch.float64)
    dens = LogNormal(-1.2, 1.2).log_density(grid.exp()).exp()
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-6)


def test_vp_training_distribution_matches_its_cdf():
    dist = VPTraining()
    s = dist.sample(50_000, torch.Generator().manual_seed(1)).double().numpy()
    bd, bmin, eps = 19.9, 0.1, 1e-5
    cdf = lambda v: ((np.sqrt(bmin ** 2 + 2 * bd * np.log(1 + v ** 2)) - bmin) / bd - eps) / (1 - eps)
    assert stats.kstest(s, cdf).pvalue > 1e-3
    grid = torch.linspace(math.log(float(s.min())), math.log(float(s.max())), 20001, dtype=torch.float64)
    dens = dist.log_density(grid.exp()).exp()
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=2e-3)


def test_loguniform_matches_its_cdf():
    s = LogUniform(0.02, 100).sample(50_000, torch.Generator().manual_seed(2)).double().numpy()
    cdf = lambda v: np.log(v / 0.02) / np.log(100 / 0.02)
    assert stats.kstest(s, cdf).pvalue > 1e-3
