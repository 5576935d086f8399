"""EDM's non-leaking augmentation: the filter it resamples with, its probabilities and label encoding, and
oracles for every transform (exact pixel operations; the geometric ones against the analytic transform of
a smooth pattern, decoded from the label with the formulas of EDM's encoding written out here)."""
import math

import numpy as np
import pytest
import torch

from diffrepro import augment as A
from diffrepro.augment import EDM_CIFAR10, SYM6, AugmentPipe, augment, decode, draw

SIZE = 32


def gen(seed):
    return torch.Generator().manual_seed(seed)


def pattern(x, y):
    """A smooth image over centred pixel coordinates (period >= 12 px), values in about [-1, 1]."""
    return (0.5 * torch.cos(2 * math.pi * (0.045 * x + 0.02 * y) + 0.3)
            + 0.3 * torch.sin(2 * math.pi * (-0.03 * x + 0.06 * y) + 1.1) + 0.2 * torch.cos(2 * math.pi * 0.08 * y))


def centred_grid(size=SIZE):
    c = (size - 1) / 2
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) - c, torch.arange(size, dtype=torch.float64) - c,
                            indexing="ij")
    return xs, ys


def smooth_batch(n, channels=3):
    xs, ys = centred_grid()
    img = pattern(xs, ys).float()
    return torch.stack([img * (1 - 0.2 * k) for k in range(channels)])[None].repeat(n, 1, 1, 1)


def g_inv_from_label(row, pipe):
    """EDM's label -> G_inv (output -> input, centred coordinates), from the formulas of its encoding."""
    lab = dict(zip(pipe.label_names, [float(v) for v in row]))
    G = np.eye(3)
    if "scale" in lab:
        s = 2 ** (0.2 * lab["scale"])
        G = G @ np.diag([1 / s, 1 / s, 1])
    if "rot_sin" in lab:
        t = math.atan2(lab["rot_sin"], lab["rot_cos_m1"] + 1)
        G = G @ np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    if "aniso_cos" in lab:
        a, b = lab["aniso_cos"], lab["aniso_sin"]
        w = math.hypot(a, b) * (1 if a > 0 or (a == 0 and b <= 0) else -1)   # axis on [-pi/2, pi/2)
        r = math.atan2(b * np.sign(w or 1), a * np.sign(w or 1)) if w else 0.0
        s = 2 ** (0.2 * w)
        R = lambda t: np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])  # noqa
        G = G @ R(-r) @ np.diag([1 / s, s, 1]) @ R(r)
    if "tx" in lab:
        G = G @ np.array([[1, 0, -lab["tx"] * SIZE * 0.125], [0, 1, -lab["ty"] * SIZE * 0.125], [0, 0, 1]])
    return G


# --- facts ----------------------------------------------------------------------------------------------

def test_sym6_is_an_orthonormal_wavelet_filter():
    h = np.array(SYM6, np.float64)
    assert h.sum() == pytest.approx(math.sqrt(2), abs=1e-12) and (h * h).sum() == pytest.approx(1, abs=1e-12)
    for m in range(1, 6):
        assert abs(h[:-2 * m] @ h[2 * m:]) < 1e-12                  # orthogonal to its even shifts
    g = (-1) ** np.arange(12) * h[::-1]                              # the matching high-pass filter
    for j in range(6):                                               # 6 vanishing moments
        assert abs((np.arange(12, dtype=np.float64) ** j * g).sum()) < 1e-7 * 12 ** j


def test_edm_cifar10_configuration():
    assert A.EDM_CIFAR10_P == 0.12 and EDM_CIFAR10.label_dim == A.EDM_CIFAR10_DIM == 9
    assert EDM_CIFAR10.label_names == ["xflip", "yflip", "scale", "rot_cos_m1", "rot_sin", "aniso_cos", "aniso_sin",
                                       "tx", "ty"]
    assert (EDM_CIFAR10.xflip, EDM_CIFAR10.yflip, EDM_CIFAR10.scale, EDM_CIFAR10.rotate_frac, EDM_CIFAR10.aniso,
            EDM_CIFAR10.translate_frac, EDM_CIFAR10.rotate_int, EDM_CIFAR10.translate_int) == (1e8, 1, 1, 1, 1, 1, 0, 0)


def test_probabilities_and_parameter_distributions():
    n, p = 40_000, 0.12
    lab = draw(EDM_CIFAR10, n, p, gen(0), (SIZE, SIZE)).labels.double().numpy()
    names = EDM_CIFAR10.label_names
    col = {k: lab[:, i] for i, k in enumerate(names)}

    def near(frac, want):   # within 5 binomial standard deviations
        assert abs(frac - want) < 5 * math.sqrt(want * (1 - want) / n), (frac, want)

    near((col["xflip"] == 1).mean(), 0.5)                         # p x 1e8 >= 1: always a fair coin
    near((col["yflip"] == 1).mean(), p * 0.5)
    for key in ("scale", "rot_sin", "aniso_cos", "tx"):
        near((col[key] != 0).mean(), p)
    near(((col["scale"] != 0) | (col["rot_sin"] != 0) | (col["aniso_cos"] != 0) | (col["tx"] != 0)).mean(),
         1 - (1 - p) ** 4)
    on = col["scale"] != 0
    assert abs(col["scale"][on].mean()) < 0.1 and col["scale"][on].std() == pytest.approx(1, abs=0.06)
    theta = np.arctan2(col["rot_sin"], col["rot_cos_m1"] + 1)[col["rot_sin"] != 0]
    assert np.histogram(theta, 4, (-math.pi, math.pi))[0].min() > 0.8 * len(theta) / 4   # uniform on the circle
    a_on = col["aniso_cos"] != 0
    turned = (col["aniso_sin"] != 0)[a_on].mean()
    assert abs(turned - 0.5) < 5 * math.sqrt(0.25 / a_on.sum())   # aniso axis rotated half the time
    assert col["tx"][col["tx"] != 0].std() == pytest.approx(1, abs=0.06)


# --- properties -----------------------------------------------------------------------------------------

def test_p_zero_leaves_images_and_zero_labels():
    x = torch.randn(64, 3, SIZE, SIZE, generator=gen(1))
    out, labels = augment(x, 0.0, gen(2))
    assert torch.equal(out, x) and labels.shape == (64, 9) and not labels.any()


def test_deterministic_given_the_generator_and_sharded_like_one_process():
    x = torch.randn(16, 3, SIZE, SIZE, generator=gen(3))
    a, la = augment(x, 0.5, gen(7))
    b, lb = augment(x, 0.5, gen(7))
    assert torch.equal(a, b) and torch.equal(la, lb)
    c, lc = augment(x, 0.5, gen(8))
    assert not torch.equal(la, lc)
    parts = [augment(x[r * 8:(r + 1) * 8], 0.5, gen(7), shard=(r, 2)) for r in range(2)]
    assert torch.equal(torch.cat([q[1] for q in parts]), la)
    # the mirror padding is sized per batch: other coordinates offsets, the same values up to float rounding
    torch.testing.assert_close(torch.cat([q[0] for q in parts]), a, rtol=0, atol=1e-4)


def test_constant_image_stays_constant():
    x = torch.full((32, 1, SIZE, SIZE), 0.37)
    out, labels = augment(x, 1.0, gen(4))
    assert (labels[:, 2:] != 0).all(1).float().mean() > 0.3          # most images: every geometric transform
    assert (out - 0.37).abs().max() < 1e-5                            # mirror padding, unit DC gain


def test_half_precision_input_is_augmented_in_float32():
    x = torch.randn(8, 3, SIZE, SIZE, generator=gen(5))
    ref, lab = augment(x, 1.0, gen(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, lab2 = augment(x.bfloat16(), 1.0, gen(6))
    assert got.dtype == torch.bfloat16 and torch.equal(lab, lab2)
    torch.testing.assert_close(got.float(), augment(x.bfloat16().float(), 1.0, gen(6))[0].bfloat16().float())
    assert (got.float() - ref).abs().max() < 0.05


# --- every transform, decoded from its label -------------------------------------------------------------

def test_flips_quarter_turns_and_integer_shifts_are_exact():
    x = torch.randn(64, 2, SIZE, SIZE, generator=gen(9))
    pipe = AugmentPipe(xflip=1, yflip=1, rotate_int=1, translate_int=1)
    out, lab = augment(x, 1.0, gen(10), pipe)
    col = dict(zip(pipe.label_names, lab.unbind(1)))
    seen = set()
    for i in range(64):
        want = x[i]
        if col["xflip"][i]:
            want = want.flip(2)
        if col["yflip"][i]:
            want = want.flip(1)
        a, b = bool(col["rot90_a"][i]), bool(col["rot90_b"][i])
        k = {(False, False): 0, (True, False): 1, (True, True): 2, (False, True): 3}[(a, b)]
        want = torch.rot90(want, k, dims=(1, 2))
        tx, ty = round(float(col["tx_int"][i]) * SIZE * 0.125), round(float(col["ty_int"][i]) * SIZE * 0.125)
        seen.add((k, tx != 0))
        # integer translation: out(y, x) = in(y + ty, x - tx), mirrored at the borders
        ys, xs = slice(max(0, -ty), SIZE - max(0, ty)), slice(max(0, tx), SIZE - max(0, -tx))
        src_y, src_x = slice(ys.start + ty, ys.stop + ty), slice(xs.start - tx, xs.stop - tx)
        assert torch.equal(out[i][:, ys, xs], want[:, src_y, src_x]), i
        assert abs(tx) <= 4 and abs(ty) <= 4
    assert {k for k, _ in seen} == {0, 1, 2, 3} and any(moved for _, moved in seen)
    dec = decode(lab, pipe, (SIZE, SIZE))
    assert torch.equal(A.apply(x, dec), out)                         # the label says exactly what was done


@pytest.mark.parametrize("pipe", [AugmentPipe(scale=1), AugmentPipe(rotate_frac=1), AugmentPipe(aniso=1),
                                  AugmentPipe(translate_frac=1), EDM_CIFAR10], ids=lambda p: "+".join(p.label_names))
def test_geometric_label_decodes_to_the_transform_applied(pipe):
    """out(u) = flips(image)(G_inv u) with G_inv computed from the label alone, on a smooth pattern,
    at pixels whose source lies inside the image (3 px from its border)."""
    n = 48
    x = smooth_batch(n)
    out, lab = augment(x, 1.0, gen(11), pipe)
    xs, ys = centred_grid()
    pts = torch.stack([xs, ys, torch.ones_like(xs)]).reshape(3, -1).double()
    edge = (SIZE - 1) / 2 - 3
    checked = 0
    for i in range(n):
        G = torch.from_numpy(g_inv_from_label(lab[i], pipe))
        src = G @ pts
        sx, sy = src[0], src[1]
        names = dict(zip(pipe.label_names, lab[i].tolist()))
        if names.get("xflip"):
            sx = -sx                                                  # x-flip before the geometry: x -> -x
        if names.get("yflip"):
            sy = -sy
        want = pattern(sx, sy).reshape(SIZE, SIZE).float()
        inside = ((src[0].abs() <= edge) & (src[1].abs() <= edge)).reshape(SIZE, SIZE)
        assert inside.sum() > 100
        err = (out[i, 0] - want)[inside].abs().max()
        # pattern amplitude ~1; the error is interpolation plus the filter's 0.05 px residual shift turned by
        # the rotation (up to ~0.04); a decode off by half a pixel errs by >= 0.1, a wrong flip by > 1
        assert err < 0.05, (i, float(err), names)
        checked += 1
    # the library's decoder gives the same matrices, and applying the decoded label reproduces the output
    dec = decode(lab, pipe, (SIZE, SIZE))
    drawn = draw(pipe, n, 1.0, gen(11), (SIZE, SIZE))
    torch.testing.assert_close(dec.G_inv, drawn.G_inv, rtol=0, atol=2e-5)
    assert torch.equal(dec.geometric, drawn.geometric)
    torch.testing.assert_close(A.apply(x, dec), out, rtol=0, atol=1e-4)


def test_inverse_transform_from_the_label_recovers_the_input():
    x = smooth_batch(24, channels=1)
    out, lab = augment(x, 1.0, gen(12), AugmentPipe(scale=1, rotate_frac=1, aniso=1, translate_frac=1))
    dec = decode(lab, AugmentPipe(scale=1, rotate_frac=1, aniso=1, translate_frac=1), (SIZE, SIZE))
    G = torch.linalg.inv(dec.G_inv)
    back = A._resample(out, G)
    c = slice(12, 20)                                                 # away from the borders ...
    xs, ys = centred_grid()
    centre = torch.stack([xs[c, c], ys[c, c], torch.ones(8, 8, dtype=torch.float64)]).reshape(3, -1).float()
    kept = ((G @ centre)[:, :2].abs().amax((1, 2)) < (SIZE - 1) / 2 - 4)   # ... where the output still holds it
    assert kept.sum() >= 8
    assert (back[kept][:, :, c, c] - x[kept][:, :, c, c]).abs().max() < 0.05
    assert (out[kept][:, :, c, c] - x[kept][:, :, c, c]).abs().max() > 0.2     # the transform did something


def test_aniso_label_determines_the_transform():
    # EDM's full-circle axis: (w, r) and (-w, r + pi) share the label w (cos r, sin r) but differ as transforms
    w, r = torch.tensor([0.8]), torch.tensor([0.6])
    pipe = AugmentPipe(aniso=1)
    zero = torch.zeros(1)
    G1 = A._geometry(pipe, (SIZE, SIZE), zero, zero, w, r, torch.zeros(1, 2))
    G2 = A._geometry(pipe, (SIZE, SIZE), zero, zero, -w, r + math.pi, torch.zeros(1, 2))
    torch.testing.assert_close(w * torch.stack([r.cos(), r.sin()]), -w * torch.stack([(r + math.pi).cos(),
                                                                                      (r + math.pi).sin()]))
    assert (G1 - G2).abs().max() > 0.1
    # our draw keeps r on [-pi/2, pi/2): decoding recovers the drawn matrix for every label
    d = draw(pipe, 4000, 1.0, gen(13), (SIZE, SIZE))
    torch.testing.assert_close(decode(d.labels, pipe, (SIZE, SIZE)).G_inv, d.G_inv, rtol=0, atol=2e-5)


# --- the training hook ------------------------------------------------------------------------------------

def test_loss_hook_passes_augmented_images_and_labels():
    from diffrepro.loss import DenoisingLoss
    from diffrepro.sigma_dist import LogNormal

    seen = {}

    class Probe(torch.nn.Module):
        def forward(self, x, sigma, class_labels=None, **kw):
            seen.update(x=x, kw=kw)
            return torch.zeros_like(x)

        def loss_weight(self, sigma):
            return torch.ones_like(sigma)

    y = smooth_batch(6)
    sigma, noise = torch.full((6,), 1e-3), torch.zeros_like(y)
    loss = DenoisingLoss(LogNormal(), augment_fn=A.NonLeakingAugment(1.0))
    out = loss(Probe(), y, gen(14), sigma=sigma, noise=noise)
    aug, lab = augment(y, 1.0, gen(14))
    assert torch.equal(seen["x"], aug) and torch.equal(seen["kw"]["augment_labels"], lab)
    torch.testing.assert_close(out.mse, (aug ** 2).flatten(1).mean(1))   # the target is the augmented image
    DenoisingLoss(LogNormal())(Probe(), y, gen(14), sigma=sigma, noise=noise)
    assert seen["kw"] == {} and torch.equal(seen["x"], y)                 # off: the network call is unchanged
