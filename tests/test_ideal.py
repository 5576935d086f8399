import pytest
import torch

from diffrepro.ideal import IdealDenoiser


def brute_force(data, x, sigma):
    """Posterior mean from the definition, with direct differences, float64."""
    d2 = ((x[:, None, :] - data[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * sigma ** 2), dim=1)
    return w @ data


@pytest.mark.parametrize("sigma", [0.01, 0.1, 1.0, 10.0])
def test_matches_definition_for_any_chunking(sigma):
    g = torch.Generator().manual_seed(0)
    data = torch.rand(300, 12, dtype=torch.float64, generator=g) * 2 - 1
    x = data[:20] + torch.randn(20, 12, dtype=torch.float64, generator=g) * sigma
    ref = brute_force(data, x, sigma)
    for chunk in (7, 64, 1000):
        got = IdealDenoiser(data, chunk_size=chunk)(x, sigma)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_limits_and_image_shapes():
    g = torch.Generator().manual_seed(1)
    data = torch.rand(50, 1, 4, 4, dtype=torch.float64, generator=g)
    D = IdealDenoiser(data, chunk_size=16)
    x = data[:5] + 1e-3 * torch.randn(5, 1, 4, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(D(x, 1e-4), data[:5])                 # tiny sigma: nearest point
    far = D(x, 1e4)
    torch.testing.assert_close(far, data.mean(0, keepdim=True).expand(5, -1, -1, -1), atol=1e-6, rtol=0)
    per_sample = D(x, torch.full((5,), 1e-4, dtype=torch.float64))
    torch.testing.assert_close(per_sample, data[:5])


def test_no_overflow_at_tiny_sigma_far_from_data():
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[50.0, 3.0]], dtype=torch.float64)
    out = IdealDenoiser(data)(x, 1e-3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, data[1:])
