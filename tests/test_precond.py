"""Preconditioning equals EDM Table 1, written out independently here in float64 numpy."""
import numpy as np
import pytest
import torch
from torch import nn

from diffrepro.precond import EDMPrecond, VEPrecond, VPPrecond, effective_target_scale

SIGMAS = np.exp(np.linspace(np.log(0.002), np.log(80.0), 101))
SD = 0.5


class Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x, c_noise, class_labels=None):
        return x * self.w


def table1(kind, s):
    bd, bmin, M = 19.9, 0.1, 1000
    if kind == "vp":
        t_of_sigma = (np.sqrt(bmin ** 2 + 2 * bd * np.log(1 + s ** 2)) - bmin) / bd
        return dict(c_skip=np.ones_like(s), c_out=-s, c_in=1 / np.sqrt(s ** 2 + 1),
                    c_noise=(M - 1) * t_of_sigma, loss_weight=1 / s ** 2)
    if kind == "ve":
        return dict(c_skip=np.ones_like(s), c_out=s, c_in=np.ones_like(s), c_noise=np.log(0.5 * s),
                    loss_weight=1 / s ** 2)
    return dict(c_skip=SD ** 2 / (s ** 2 + SD ** 2), c_out=s * SD / np.sqrt(s ** 2 + SD ** 2),
                c_in=1 / np.sqrt(s ** 2 + SD ** 2), c_noise=0.25 * np.log(s),
                loss_weight=(s ** 2 + SD ** 2) / (s * SD) ** 2)


@pytest.mark.parametrize("cls,kind", [(VPPrecond, "vp"), (VEPrecond, "ve"), (EDMPrecond, "edm")])
def test_coefficients_match_table1(cls, kind):
    pre = cls(Zero())
    s = torch.tensor(SIGMAS, dtype=torch.float64)
    ref = table1(kind, SIGMAS)
    for name, expected in ref.items():
        got = getattr(pre, name)(s).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"{kind}.{name}")


@pytest.mark.parametrize("cls", [VPPrecond, VEPrecond, EDMPrecond])
def test_schedule_inverse_and_derivatives(cls):
    pre = cls(Zero())
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64) * (1 if cls is VPPrecond else 50)
    np.testing.assert_allclose(pre.sigma_inv(pre.sigma(t)), t, rtol=1e-10)
    h = 1e-6 * t
    fd = (pre.sigma(t + h) - pre.sigma(t - h)) / (2 * h)
    np.testing.assert_allclose(pre.sigma_deriv(t), fd, rtol=1e-6)
    fd_s = (pre.s(t + h) - pre.s(t - h)) / (2 * h)
    np.testing.assert_allclose(pre.s_deriv(t), fd_s, rtol=1e-6, atol=1e-12)


def test_vp_sigma_range_from_epsilon_t():
    pre = VPPrecond(Zero())
    assert pre.sigma_min == pytest.approx(np.sqrt(np.exp(0.5 * 19.9 * 1e-10 + 0.1 * 1e-5) - 1), rel=1e-9)
    assert pre.sigma_max == pytest.approx(np.sqrt(np.exp(0.5 * 19.9 + 0.1) - 1), rel=1e-12)


@pytest.mark.parametrize("cls", [VPPrecond, VEPrecond, EDMPrecond])
def test_wraps_network_into_denoiser(cls):
    """With F = 0 the denoiser is c_skip * x, for batched and scalar sigma."""
    pre = cls(Zero())
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0, 50.0], dtype=torch.float64)
    with torch.no_grad():
        D, D1 = pre(x, sigma), pre(x, 2.0)
    np.testing.assert_allclose(D, pre.c_skip(sigma).reshape(-1, 1, 1, 1) * x, rtol=1e-12)
    np.testing.assert_allclose(D1, pre.c_skip(torch.tensor(2.0, dtype=torch.float64)) * x, rtol=1e-12)


def test_edm_input_and_target_have_unit_variance():
    """EDM eq. 7-8: c_in * (y + n) and the effective target (y - c_skip(y+n))/c_out have unit
    variance for data of std sigma_data, at every sigma (Monte Carlo over 200k draws)."""
    pre = EDMPrecond(Zero())
    g = torch.Generator().manual_seed(0)
    y = torch.randn(200_000, dtype=torch.float64, generator=g) * SD
    n = torch.randn(200_000, dtype=torch.float64, generator=g)
    for s in [0.002, 0.05, 0.5, 2.0, 80.0]:
        s_t = torch.tensor(s, dtype=torch.float64)
        x = y + n * s
        assert (pre.c_in(s_t) * x).std().item() == pytest.approx(1.0, abs=0.01)
        target = (y - pre.c_skip(s_t) * x) / pre.c_out(s_t)
        assert target.std().item() == pytest.approx(1.0, abs=0.01)
        assert effective_target_scale(pre, s).item() == pytest.approx(1.0, abs=1e-12)
    # VE's target is the (unit) noise, but its input is not normalised: std sqrt(sd^2 + s^2).
    ve = VEPrecond(Zero())
    assert effective_target_scale(ve, 50.0).item() == pytest.approx(1.0, abs=1e-12)
    assert (ve.c_in(torch.tensor(50.0)) * (y + n * 50.0)).std().item() > 40


class ScaledByNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x, c_noise, class_labels=None):
        return self.conv(x) * c_noise.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_number_sigma_equals_tensor_sigma(dtype):
    """A Python number as sigma (what the samplers pass) gives exactly the denoiser of the same sigma as a tensor."""
    torch.manual_seed(0)
    pre = EDMPrecond(ScaledByNoise().to(dtype))
    x = torch.randn(4, 3, 4, 4, dtype=dtype)
    with torch.no_grad():
        for s in (0.002, 1 / 3, 80.0):
            torch.testing.assert_close(pre(x, s), pre(x, torch.tensor(s, dtype=torch.float64)), rtol=0, atol=0)
