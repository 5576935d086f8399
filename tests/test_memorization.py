"""Memorization metric (Gu et al. 2023): exact nearest neighbours, planted copies, and the pairs figure.

Oracle: float64 brute force with direct differences sum((a - b)^2), ties broken by the lower index.
"""
import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffrepro.metrics.memorization import (
    fast_pass_error_bound, memorization_scores, nearest_neighbours, plot_memorized_pairs,
)

FMNIST = Path("/usr/share/datasets/fashion-mnist")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_images(n, h=32, w=32, c=3, seed=0):
    """Structured uint8 images (N, H, W, C): bicubic-upsampled random 4x4 fields plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, c, 4, 4, generator=g), size=(h, w), mode="bicubic", align_corners=False)
    x = x + 0.04 * torch.randn(n, c, h, w, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def brute_force(queries, reference, k):
    """k nearest by direct float64 differences, ordered by (squared distance, index)."""
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    d2 = np.stack([((r - row) ** 2).sum(1) for row in q])
    order = np.lexsort((np.broadcast_to(np.arange(len(r)), d2.shape), d2), axis=1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, 1)), order


def near_duplicate_set(seed=0, dim=(32, 32, 3)):
    """Images of 0/255 pixels (large norms: the float32 expansion cannot resolve a squared distance of 1)
    and groups of near-duplicates that differ by one pixel value of 1, exact duplicates (ties) and a group
    larger than k + margin (forces the exact rescan). Returns queries, reference."""
    rng = np.random.default_rng(seed)
    D = int(np.prod(dim))
    bases = rng.choice(np.array([0, 255], np.uint8), size=(30, D))
    ref = [rng.choice(np.array([0, 255], np.uint8), size=(200, D))]
    for g, b in enumerate(bases):
        size = 14 if g == 0 else int(rng.integers(1, 6))     # group 0: more than k + margin = 11 members
        for _ in range(size):
            m = b.copy()
            p = rng.integers(D)
            m[p] = 1 if m[p] == 0 else 254                      # one pixel value off by 1: d^2 = 1
            ref.append(m[None])
        if g % 3 == 0:
            ref.append(np.repeat(b[None], 2, 0))                # exact duplicates: a tie at d = 0
    ref = np.concatenate(ref)
    ref = ref[rng.permutation(len(ref))]
    queries = np.concatenate([bases, rng.choice(np.array([0, 255], np.uint8), size=(10, D))])
    return queries.reshape(-1, *dim), ref.reshape(-1, *dim)


def load_idx_images(path, n):
    """First n images of an IDX3 file (16-byte header), uint8 (n, 28, 28)."""
    with gzip.open(path) as f:
        buf = f.read(16 + n * 784)
    return np.frombuffer(buf, np.uint8, offset=16).reshape(n, 28, 28)


# ----------------------------------------------------------------------------------------------------
# planted copies

@pytest.mark.parametrize("channels", [1, 3])
def test_planted_copies_are_exactly_the_memorized_samples(channels):
    rng = np.random.default_rng(channels)
    train = smooth_images(400, c=channels, seed=10 + channels)
    fresh = smooth_images(40, c=channels, seed=20 + channels)
    src = rng.choice(len(train), size=12, replace=False)
    samples = np.concatenate([train[src], fresh])
    perm = rng.permutation(len(samples))
    samples, is_copy = samples[perm], (perm < len(src))
    s = memorization_scores(samples, train)
    assert s.count == len(src) and s.n_samples == len(samples) and s.n_train == len(train)
    np.testing.assert_array_equal(s.memorized, is_copy)
    np.testing.assert_array_equal(s.nearest[is_copy], src[perm[is_copy]])
    assert np.all(s.d1[is_copy] == 0) and np.all(s.ratio[~is_copy] > 0.5)
    assert s.fraction_memorized == pytest.approx(len(src) / len(samples))


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not found")
def test_planted_copies_fashion_mnist():
    rng = np.random.default_rng(0)
    pool = load_idx_images(FMNIST / "train-images-idx3-ubyte.gz", 6000)
    train = pool[rng.choice(len(pool), size=3000, replace=False)]
    fresh = load_idx_images(FMNIST / "t10k-images-idx3-ubyte.gz", 1000)[rng.choice(1000, 80, replace=False)]
    src = rng.choice(len(train), size=20, replace=False)
    # expected neighbour of a copy: the lowest index holding the same image (Fashion-MNIST has duplicates)
    flat = train.reshape(len(train), -1)
    expected = np.array([np.flatnonzero((flat == flat[j]).all(1))[0] for j in src])
    samples = np.concatenate([train[src], fresh])
    s = memorization_scores(samples, train, chunk_size=(64, 1024))
    assert s.count == len(src)
    assert s.memorized[:20].all() and not s.memorized[20:].any()
    np.testing.assert_array_equal(s.nearest[:20], expected)


def test_noisy_near_duplicate_is_memorized_and_fresh_image_is_not():
    rng = np.random.default_rng(3)
    train = smooth_images(300, c=3, seed=5)
    noisy = train[123].astype(np.int16)
    pix = rng.choice(noisy.size, size=12, replace=False)
    noisy.flat[pix] += rng.choice([-2, 2], size=12)
    noisy = noisy.clip(0, 255).astype(np.uint8)
    fresh = smooth_images(1, c=3, seed=99)[0]
    s = memorization_scores(np.stack([noisy, fresh]), train)
    assert s.memorized.tolist() == [True, False]
    assert s.nearest[0] == 123
    # distances over uint8 pixels divided by sqrt(C*H*W)
    d1 = np.sqrt(((noisy.astype(np.float64) - train[123]) ** 2).sum()) / np.sqrt(32 * 32 * 3)
    assert s.d1[0] == pytest.approx(d1, rel=1e-15)
    assert s.normalized and s.ratio[1] > 0.5


def test_duplicated_training_image_exact_and_near_copies_are_memorized():
    """Gu's d2 is taken to the second *distinct* training image: a copy of an image the training set holds
    twice is memorized, exactly or +-1, with the same ratio as if it were held once."""
    train = smooth_images(50, c=1, seed=7)
    train[31] = train[8]
    near = train[8].astype(np.int16)
    near[5, 5, 0] += 1 if near[5, 5, 0] < 255 else -1
    samples = np.stack([train[31], near.astype(np.uint8), train[0]])
    s = memorization_scores(samples, train)
    assert s.memorized.tolist() == [True, True, True] and s.n_train_distinct == 49
    assert s.nearest.tolist() == [8, 8, 0]                  # the lowest index among the copies
    assert 31 not in s.second and 8 not in s.second[:2]
    # oracle: brute force over the distinct images (train without index 31), float64
    distinct = np.delete(train, 31, axis=0).reshape(49, -1).astype(np.float64)
    for i, x in enumerate(samples):
        d = np.sqrt(((distinct - x.reshape(1, -1)) ** 2).sum(1)) / np.sqrt(32 * 32)
        d1, d2 = np.sort(d)[:2]
        assert s.d1[i] == pytest.approx(d1, abs=1e-12) and s.d2[i] == pytest.approx(d2, rel=1e-12)
        assert s.ratio[i] == pytest.approx(d1 / d2, abs=1e-12)
    assert s.d1[1] > 0 and s.ratio[1] < 0.05                 # was d1/d2 = 1 (not memorized) against both copies
    # the same ratios as against the training set holding the image once
    once = memorization_scores(samples, np.delete(train, 31, axis=0))
    np.testing.assert_array_equal(once.ratio, s.ratio)
    # float inputs: -0.0 and 0.0 are one value
    pts = torch.tensor([[0.0, 1.0], [-0.0, 1.0], [3.0, 0.0]], dtype=torch.float64)
    t = memorization_scores(torch.tensor([[0.0, 1.01]], dtype=torch.float64), pts)
    assert t.n_train_distinct == 2 and t.memorized.tolist() == [True]
    with pytest.raises(ValueError, match="holds 1 distinct item"):
        memorization_scores(samples, np.stack([train[0]] * 5))


# ----------------------------------------------------------------------------------------------------
# inputs that would give a silent wrong number

def test_mixed_dtypes_are_refused_and_the_documented_conversion_works():
    from diffrepro.samplers import to_uint8

    train = smooth_images(60, c=3, seed=11)
    copies = torch.from_numpy(train[:4]).permute(0, 3, 1, 2).float() / 127.5 - 1    # EDM's [-1, 1], NCHW
    with pytest.raises(ValueError, match=r"samples are float32 in \[-1, 1\], the training set uint8 in \[0, 255\].*"
                                         r"to_uint8"):
        memorization_scores(copies.permute(0, 2, 3, 1).numpy(), train)
    s = memorization_scores(to_uint8(copies), train)                              # the documented rule
    assert s.count == 4 and s.nearest.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"\[0, 255\] pixels, the other like \[-1, 1\]"):
        memorization_scores(copies.permute(0, 2, 3, 1).numpy(), train.astype(np.float32))
    as_float = torch.from_numpy(train).float() / 127.5 - 1                          # both float, one convention
    assert memorization_scores(copies.permute(0, 2, 3, 1), as_float).count == 4
    # unclipped samples of an undertrained model overshoot [-1, 1] (seen: [-2.8, 2.5]): still that convention
    overshoot = copies.permute(0, 2, 3, 1).clone()
    overshoot[0, 0, 0, 0], overshoot[1, 0, 0, 0] = -2.8, 3.0
    assert memorization_scores(overshoot, as_float).nearest.tolist() == [0, 1, 2, 3]


def test_layouts_must_agree():
    train = smooth_images(30, c=3, seed=12)
    first = np.ascontiguousarray(train[:3].transpose(0, 3, 1, 2))                   # same flattened size
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\).*\(M, 32, 32, 3\).*transpose\(0, 2, 3, 1\)"):
        memorization_scores(first, train)
    gray = smooth_images(30, c=1, seed=13)
    for view in (gray[:, :, :, 0], gray.transpose(0, 3, 1, 2)):                    # (N,H,W), (N,1,H,W): one layout
        assert memorization_scores(view[:2], gray).count == 2


def test_empty_inputs_give_one_line():
    train = smooth_images(10, c=1, seed=14)
    for samples, ref in ((train[:0], train), (train[:2], train[:0])):
        with pytest.raises(ValueError, match=r"need samples and training items, got \d+ samples and \d+") as err:
            memorization_scores(samples, ref)
        assert "\n" not in str(err.value)


def test_toy_points_use_plain_l2():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(100, 2, dtype=torch.float64, generator=g)
    samples = torch.cat([train[:5] + 1e-6, torch.randn(20, 2, dtype=torch.float64, generator=g) * 3])
    s = memorization_scores(samples, train)
    assert not s.normalized and s.memorized[:5].all()
    np.testing.assert_array_equal(s.nearest[:5], np.arange(5))
    np.testing.assert_allclose(s.d1[:5], np.sqrt(2) * 1e-6, rtol=1e-6)


def test_threshold_is_strict_one_third():
    train = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 40.0]])
    samples = np.array([[1.0, 0.0], [0.9, 0.0], [1.1, 0.0], [2.0, 0.0]])   # d1/d2 = 1/3, 9/31, 11/29, 1
    s = memorization_scores(samples, train)
    np.testing.assert_allclose(s.ratio, [1 / 3, 9 / 31, 11 / 29, 1.0], rtol=1e-15)
    assert s.memorized.tolist() == [False, True, False, False]
    assert memorization_scores(samples, train, threshold=0.4).memorized.tolist() == [True, True, True, False]


def test_summary_and_frame():
    train = smooth_images(60, c=1, seed=1)
    s = memorization_scores(np.concatenate([train[:3], smooth_images(7, c=1, seed=2)]), train)
    df = s.to_frame()
    assert list(df.columns) == ["sample", "nearest_index", "second_index", "d1", "d2", "ratio", "memorized"]
    assert len(df) == 10 and df["memorized"].sum() == 3
    assert s.summary() == dict(fraction_memorized=0.3, count=3, n_samples=10, n_train=60, n_train_distinct=60,
                               threshold=1 / 3)


# ----------------------------------------------------------------------------------------------------
# exactness of the nearest neighbours

def test_exact_against_float64_brute_force_with_near_duplicates():
    queries, ref = near_duplicate_set()
    want_d, want_i = brute_force(queries, ref, k=3)
    stats = {}
    got_d, got_i = nearest_neighbours(queries, ref, k=3, stats=stats)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=0)
    assert stats["n_rescanned"] >= 1                        # the 14-member group needed the exact rescan
    # the data really are beyond the float32 expansion: the fast pass alone mis-ranks
    fast_d, fast_i = nearest_neighbours(queries, ref, k=3, exact=False)
    assert (fast_i != want_i).any()


@pytest.mark.parametrize("dim", [2, 17])
def test_exact_against_brute_force_for_float_points(dim):
    g = torch.Generator().manual_seed(dim)
    ref = torch.randn(500, dim, dtype=torch.float64, generator=g) * 10
    queries = torch.cat([ref[:20] + 1e-9 * torch.randn(20, dim, dtype=torch.float64, generator=g),
                         torch.randn(40, dim, dtype=torch.float64, generator=g) * 10])
    ref[100] = ref[3] + 2e-9                                 # a second near-copy of a queried point
    want_d, want_i = brute_force(queries, ref, k=2)
    got_d, got_i = nearest_neighbours(queries, ref, k=2)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=0)


def test_chunking_and_margin_do_not_change_results():
    queries, ref = near_duplicate_set(seed=1, dim=(8, 8, 3))
    base_d, base_i = nearest_neighbours(queries, ref, k=2)
    for chunk in [(7, 61), (13, 29), (1, 1000), (len(queries), len(ref))]:
        d, i = nearest_neighbours(queries, ref, k=2, chunk_size=chunk)
        np.testing.assert_array_equal(i, base_i)
        np.testing.assert_array_equal(d, base_d)
    stats = {}
    d, i = nearest_neighbours(queries, ref, k=2, margin=0, chunk_size=(16, 50), stats=stats)
    np.testing.assert_array_equal(i, base_i)
    np.testing.assert_array_equal(d, base_d)
    assert stats["n_rescanned"] > 0


def test_error_bound_and_arguments():
    assert fast_pass_error_bound(3072) == pytest.approx(2 * (3072 * 2.0 ** -23 + 8 * 2.0 ** -23), rel=1e-3)
    x = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError):
        nearest_neighbours(x, x[:1], k=2)                    # k > M
    with pytest.raises(ValueError):
        nearest_neighbours(x, np.zeros((3, 5, 4), np.uint8))  # shapes differ
    with pytest.raises(ValueError):
        nearest_neighbours(x.astype(float), x, gemm="bf16")  # bf16 only for uint8


# ----------------------------------------------------------------------------------------------------
# figure

@pytest.mark.parametrize("channels", [1, 3])
def test_pairs_figure_is_a_png(tmp_path, channels):
    train = smooth_images(80, c=channels, seed=4)
    samples = np.concatenate([train[:5], smooth_images(15, c=channels, seed=6)])
    s = memorization_scores(samples, train)
    path = tmp_path / "figs" / "pairs.png"
    assert plot_memorized_pairs(samples, train, s, path, top=8) == path
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000
    assert os.listdir(path.parent) == ["pairs.png"]         # no temporary file left behind


def test_pairs_figure_for_toy_points(tmp_path):
    g = torch.Generator().manual_seed(1)
    train = torch.randn(30, 2, generator=g)
    samples = torch.cat([train[:4], torch.randn(10, 2, generator=g)])
    s = memorization_scores(samples, train)
    path = plot_memorized_pairs(samples, train, s, tmp_path / "toy.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------------
# CUDA (run with -m gpu)

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("gemm", [None, "fp32"])
def test_cuda_matches_cpu(gemm):
    queries, ref = near_duplicate_set(seed=2)
    want_d, want_i = brute_force(queries, ref, k=3)
    d, i = nearest_neighbours(torch.from_numpy(queries).cuda(), ref, k=3, device="cuda", gemm=gemm)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(d, want_d)
    train = smooth_images(3000, seed=8)
    samples = np.concatenate([train[:50], smooth_images(450, seed=9)])
    cpu = memorization_scores(samples, train)
    gpu = memorization_scores(samples, train, device="cuda", gemm=gemm)
    np.testing.assert_array_equal(gpu.nearest, cpu.nearest)
    np.testing.assert_array_equal(gpu.ratio, cpu.ratio)


@pytest.mark.gpu
@pytest.mark.integration
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_speed_50k_cifar_sized():
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)

    def images(n):
        x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g, device=dev), size=(32, 32), mode="bicubic")
        x = x + 0.05 * torch.randn(n, 3, 32, 32, generator=g, device=dev)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    train, samples = images(50_000), images(50_000)
    samples[:1000] = train[:1000]
    memorization_scores(samples, train, device=dev)          # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    s = memorization_scores(samples, train, device=dev)
    elapsed = time.perf_counter() - t
    print(f"50k x 50k x 3072 on {torch.cuda.get_device_name()}: {elapsed:.3f} s")
    assert s.memorized[:1000].all() and (s.nearest[:1000] == np.arange(1000)).all()
    assert elapsed < 0.5


def test_memtrace_stage_counts_with_the_threshold_of_its_spec(tmp_path):
    """The memorization-over-training stage takes the threshold from its spec (it once always used 1/3).
    Oracle: at threshold 1 every sample counts (d1/d2 < 1 without ties); at the median ratio exactly half."""
    import json

    from stages import memtrace, prepare, train

    (tmp_path / "data.json").write_text(json.dumps(
        {"dataset": {"kind": "toy2d", "name": "ring", "n_train": 200, "n_heldout": 50, "seed": 0}}))
    (tmp_path / "train.json").write_text(json.dumps(
        {"method": {"name": "edm", "precond": "edm"}, "seed": 0,
         "training": {"name": "t", "network": "mlp-small", "steps": 20, "batch_size": 64, "lr": 3e-3,
                      "checkpoint_every": 20, "log_every": 20}}))
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    prepare.main(["--spec", str(tmp_path / "data.json"), "--out", data])
    train.main(["--spec", str(tmp_path / "train.json"), "--data", data, "--out", run, "--device", "cpu"])

    def count_at(threshold):
        spec = tmp_path / "memtrace.json"
        spec.write_text(json.dumps({"stage": "memtrace", "run": "t", "step": 20, "num_samples": 64, "batch_size": 64,
                                    "sampling": {"sampler": "euler", "num_steps": 4}, "threshold": threshold,
                                    "fid": None}))
        memtrace.main(["--spec", str(spec), "--model", run + "/model.pt", "--data", data,
                       "--out", str(tmp_path / "mem.json"), "--device", "cpu"])
        return json.loads((tmp_path / "mem.json").read_text())

    everything = count_at(1.0)
    assert everything["threshold"] == 1.0 and everything["count"] == everything["n_samples"] == 64
    half = count_at(everything["median_ratio"])
    assert half["threshold"] == everything["median_ratio"] and half["count"] == 32
