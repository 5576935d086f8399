"""Datasets: verified raw loaders (Fashion-MNIST from Debian's package, a synthetic CIFAR-10 archive),
errors that name the file, nested/disjoint subsets, exact padding, and atomic, hash-checked folders.
No network: downloads are exercised through file:// URLs."""
import gzip
import json
import shutil

import numpy as np
import pytest
import torch

from data_helpers import make_cifar_archive
from diffrepro.data import (DatasetError, load_cifar10, load_dataset, load_fashion_mnist, prepare_from_spec,
                            prepare_image_dataset, prepare_toy_dataset, split_indices, write_dataset)
from diffrepro.data import arrays as arrays_mod
from diffrepro.data import fashion_mnist as fm
from diffrepro.data.sources import download, md5_file, sha256_file
from diffrepro.toy2d import make_toy

DEBIAN_DIR = fm.DEBIAN_DIR  # kept: the no_debian fixture patches fm.DEBIAN_DIR
needs_debian = pytest.mark.skipif(not DEBIAN_DIR.is_dir(),
                                  reason="needs Debian's dataset-fashion-mnist (apt install dataset-fashion-mnist)")
TEST_FILES = fm.FILES["test"]


@pytest.fixture(scope="module")
def fmnist_test():
    return load_fashion_mnist("test")


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed."""
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "not-installed")


def _copy_test_split(dest, decompress=False):
    dest.mkdir(exist_ok=True)
    for name in TEST_FILES:
        src = DEBIAN_DIR / f"{name}.gz"
        if decompress:
            (dest / name).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copy(src, dest / f"{name}.gz")
    return dest


# --- Fashion-MNIST ---------------------------------------------------------------------------------

@needs_debian
def test_fashion_mnist_train_from_debian():
    raw = load_fashion_mnist("train")
    assert raw.images.shape == (60_000, 28, 28, 1) and raw.images.dtype == np.uint8
    assert raw.labels.shape == (60_000,) and raw.labels.dtype == np.int64
    assert np.array_equal(np.bincount(raw.labels), np.full(10, 6000))  # balanced, labels 0..9
    assert int(raw.images.sum(dtype=np.int64)) == 3_431_114_169        # mean pixel 72.9404
    assert raw.images.mean() == pytest.approx(72.94035, abs=1e-4)
    sums = raw.source["checksums"]
    assert sums["train-images-idx3-ubyte"]["md5_idx"] == "f4a8712d7a061bf5bd6d2ca38dc4d50a"
    assert all(c["verified_by"] == "decompressed IDX md5" for c in sums.values())
    assert "Debian" in raw.source["description"]


@needs_debian
def test_fashion_mnist_test_split(fmnist_test):
    assert fmnist_test.images.shape == (10_000, 28, 28, 1)
    assert np.array_equal(np.bincount(fmnist_test.labels), np.full(10, 1000))
    assert int(fmnist_test.images.sum(dtype=np.int64)) == 573_469_082
    assert {k: v["md5_idx"] for k, v in fmnist_test.source["checksums"].items()} == \
        {k: fm.MD5_IDX[k] for k in TEST_FILES}


@needs_debian
def test_user_folder_with_uncompressed_idx(tmp_path, fmnist_test):
    folder = _copy_test_split(tmp_path / "fm", decompress=True)
    raw = load_fashion_mnist("test", source=folder)
    assert np.array_equal(raw.images, fmnist_test.images) and np.array_equal(raw.labels, fmnist_test.labels)
    assert raw.source["checksums"]["t10k-images-idx3-ubyte"]["file"] == "t10k-images-idx3-ubyte"
    assert str(folder) in raw.source["description"]


@needs_debian
def test_upstream_gz_md5_is_accepted(tmp_path, monkeypatch):
    # Stand-in for upstream's .gz files: make the Debian .gz md5s "upstream" and break the IDX md5s,
    # so only the .gz check can accept them.
    folder = _copy_test_split(tmp_path / "fm")
    for name in TEST_FILES:
        monkeypatch.setitem(fm.MD5_GZ, name, md5_file(folder / f"{name}.gz"))
        monkeypatch.setitem(fm.MD5_IDX, name, "0" * 32)
    raw = load_fashion_mnist("test", source=folder)
    assert all(c["verified_by"] == "upstream .gz md5" for c in raw.source["checksums"].values())


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _change_pixel(path):  # a valid gzip stream whose content differs in one byte
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[-1] ^= 0x01
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1))


def _wrong_magic(path):
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[3] ^= 0x02  # 0x803 <-> 0x801: image and label magics swapped
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1))


@needs_debian
@pytest.mark.parametrize("corrupt, message", [(_flip_byte, ""), (_truncate, "truncated"),
                                              (_change_pixel, "checksum mismatch"), (_wrong_magic, "magic")])
@pytest.mark.parametrize("name", TEST_FILES)
def test_corrupt_file_is_named(tmp_path, corrupt, message, name):
    folder = _copy_test_split(tmp_path / "fm")
    bad = folder / f"{name}.gz"
    corrupt(bad)
    with pytest.raises(DatasetError) as err:
        load_fashion_mnist("test", source=folder)
    text = str(err.value)
    assert str(bad) in text and message in text
    assert "apt install dataset-fashion-mnist" in text and "datasets.<entry>.source" in text


def test_missing_sources_say_what_to_do(tmp_path, no_debian):
    with pytest.raises(DatasetError, match=r"(?s)apt install dataset-fashion-mnist.*name: fashion_mnist.*"
                                           r"datasets\.<entry>\.source.*allow_download"):
        load_fashion_mnist("train", cache_dir=tmp_path / "cache")
    (tmp_path / "user").mkdir()
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist("test", source=tmp_path / "user")


@needs_debian
def test_fashion_mnist_download_via_file_url(tmp_path, no_debian, fmnist_test):
    cache = tmp_path / "cache"
    raw = load_fashion_mnist("test", allow_download=True, cache_dir=cache, url=DEBIAN_DIR.as_uri() + "/")
    assert np.array_equal(raw.images, fmnist_test.images)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in TEST_FILES)
    assert "download cache" in raw.source["description"]
    # a corrupt server copy is rejected and nothing is left in the cache
    server = _copy_test_split(tmp_path / "server")
    _change_pixel(server / "t10k-labels-idx1-ubyte.gz")
    cache2 = tmp_path / "cache2"
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*failed verification"):
        load_fashion_mnist("test", allow_download=True, cache_dir=cache2, url=server.as_uri() + "/")
    assert sorted(p.name for p in cache2.iterdir()) == ["t10k-images-idx3-ubyte.gz"]


def test_download_checks_md5_and_leaves_nothing_on_failure(tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"hello" * 1000)
    dest = tmp_path / "cache" / "blob.bin"
    with pytest.raises(DatasetError, match="blob.bin.*md5"):
        download(src.as_uri(), dest, md5="0" * 32)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(DatasetError, match="could not download"):
        download((tmp_path / "absent").as_uri(), dest)
    assert download(src.as_uri(), dest, md5=md5_file(src)).read_bytes() == src.read_bytes()


# --- CIFAR-10 (synthetic archive in the official format) -----------------------------------------

def test_cifar10_archive_round_trip(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5, expected = make_cifar_archive(archive, n_per_batch=20)
    train = load_cifar10("train", archive=archive, md5=md5)
    test = load_cifar10("test", archive=tmp_path, md5=md5)  # a folder holding the archive works too
    assert train.images.shape == (100, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.images.shape == (20, 32, 32, 3)
    want = [expected[f"data_batch_{i}"] for i in range(1, 6)]
    assert np.array_equal(train.images, np.concatenate([w[0] for w in want]))
    assert np.array_equal(train.labels, np.concatenate([w[1] for w in want]))
    # layout oracle from the format description: row[c * 1024 + y * 32 + x] is pixel (y, x), channel c
    rows = expected["test_batch"][2]
    for i, y, x, c in [(0, 0, 0, 0), (3, 5, 7, 1), (19, 31, 30, 2), (7, 31, 0, 1)]:
        assert test.images[i, y, x, c] == rows[i, c * 1024 + y * 32 + x]
    assert test.source["checksums"]["cifar-10-python.tar.gz"]["md5"] == md5


def test_cifar10_wrong_checksum_fails_clearly(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_cifar_archive(archive, n_per_batch=4)
    for md5 in ("0" * 32, None):  # None: the official md5 (the default)
        kwargs = {} if md5 is None else {"md5": md5}
        with pytest.raises(DatasetError, match=r"cifar-10-python\.tar\.gz: checksum mismatch"):
            load_cifar10("train", archive=archive, **kwargs)


def test_cifar10_missing_member_and_missing_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5, _ = make_cifar_archive(archive, n_per_batch=4, batches=["test_batch"])
    assert load_cifar10("test", archive=archive, md5=md5).images.shape == (4, 32, 32, 3)
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_cifar10("train", archive=archive, md5=md5)
    with pytest.raises(DatasetError, match=r"(?s)not found.*name: cifar10.*allow_download"):
        load_cifar10("train", cache_dir=tmp_path / "empty-cache")


def test_cifar10_download_via_file_url(tmp_path):
    server = tmp_path / "server" / "cifar-10-python.tar.gz"
    server.parent.mkdir()
    md5, expected = make_cifar_archive(server, n_per_batch=8)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="md5"):
        load_cifar10("test", allow_download=True, cache_dir=cache, url=server.as_uri(), md5="f" * 32)
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing unverified is kept
    got = load_cifar10("test", allow_download=True, cache_dir=cache, url=server.as_uri(), md5=md5)
    assert np.array_equal(got.images, expected["test_batch"][0])
    assert [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]
    server.unlink()  # second load uses the cache, no download needed
    assert np.array_equal(load_cifar10("test", cache_dir=cache, md5=md5).labels, expected["test_batch"][1])


# --- subsets, resolution ---------------------------------------------------------------------------

def _pool(n=1000, size=28):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8), np.arange(n)  # label = pool index


def test_subsets_are_nested_and_heldout_disjoint():
    images, ids = _pool()
    small = prepare_image_dataset(images, ids, 28, 50, 100, seed=3)
    large = prepare_image_dataset(images, ids, 28, 300, 100, seed=3)
    assert np.array_equal(small.train_labels, large.train_labels[:50])
    assert np.array_equal(small.train, large.train[:50])
    assert np.array_equal(small.heldout_labels, large.heldout_labels)
    assert not set(large.train_labels) & set(large.heldout_labels)
    assert np.array_equal(large.train, images[large.train_labels])  # label = index: images follow
    everything = prepare_image_dataset(images, ids, 28, None, 100, seed=3)
    assert everything.manifest["n_train"] == 900
    assert sorted(np.concatenate([everything.train_labels, everything.heldout_labels])) == list(range(1000))
    other = prepare_image_dataset(images, ids, 28, 50, 100, seed=4)
    assert not np.array_equal(other.train_labels, small.train_labels)
    with pytest.raises(ValueError, match="does not fit"):
        split_indices(1000, 901, 100, seed=0)
    assert len(split_indices(1000, 0, 100, seed=0)[0]) == 900


@needs_debian
def test_padding_to_32_is_exact(fmnist_test):
    ds = prepare_image_dataset(fmnist_test.images, fmnist_test.labels, 32, 500, 100, seed=0)
    assert ds.manifest["resize"] == "pad" and ds.train.shape == (500, 32, 32, 1)
    train_idx, heldout_idx = split_indices(10_000, 500, 100, seed=0)
    assert np.array_equal(ds.train[:, 2:30, 2:30], fmnist_test.images[train_idx])
    assert np.array_equal(ds.heldout[:, 2:30, 2:30], fmnist_test.images[heldout_idx])
    border = ds.train.copy()
    border[:, 2:30, 2:30] = 0
    assert not border.any()


def test_bicubic_resize():
    images = np.full((3, 28, 28, 1), 77, np.uint8)
    ds = prepare_image_dataset(images, np.zeros(3), 64, None, 1, seed=0)
    assert ds.manifest["resize"] == "bicubic" and ds.train.shape == (2, 64, 64, 1)
    assert (ds.train == 77).all()  # bicubic keeps a constant image constant
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert prepare_image_dataset(rgb, np.zeros(2), 16, 2, 0, seed=0).train.shape == (2, 16, 16, 3)


# --- prepared folders ------------------------------------------------------------------------------

def test_write_load_round_trip_and_manifest(tmp_path):
    images, ids = _pool(200)
    ds = prepare_image_dataset(images, ids, 32, 64, 16, seed=0, name="fake", source={"description": "x", "checksums": {"a": 1}})
    write_dataset(tmp_path / "ds", ds)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    for key in ("name", "kind", "resolution", "channels", "n_train", "n_heldout", "seed", "source", "sha256"):
        assert key in manifest
    assert (manifest["kind"], manifest["resolution"], manifest["channels"], manifest["n_train"]) == ("image", 32, 1, 64)
    assert manifest["sha256"] == {f: sha256_file(tmp_path / "ds" / f)
                                  for f in ["train.npy", "heldout.npy", "train_labels.npy", "heldout_labels.npy"]}
    back = load_dataset(tmp_path / "ds")
    assert np.array_equal(back.train, ds.train) and np.array_equal(back.heldout_labels, ds.heldout_labels)
    x = back.train_float()
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[5, 0], torch.from_numpy(ds.train[5, :, :, 0]).float() / 127.5 - 1)
    assert back.heldout_float().shape == (16, 1, 32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp siblings left


def test_modified_or_missing_npy_is_detected(tmp_path):
    images, ids = _pool(100)
    write_dataset(tmp_path / "ds", prepare_image_dataset(images, ids, 28, 50, 10, seed=0))
    path = tmp_path / "ds" / "train.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train\.npy: sha256 .*Rerun the prepare stage"):
        load_dataset(tmp_path / "ds")
    assert load_dataset(tmp_path / "ds", verify=False).train.shape == (50, 28, 28, 1)
    (tmp_path / "ds" / "heldout_labels.npy").unlink()
    with pytest.raises(DatasetError, match=r"heldout_labels\.npy is missing.*Rerun the prepare stage"):
        load_dataset(tmp_path / "ds", verify=False)


def test_failed_write_leaves_no_partial_folder(tmp_path, monkeypatch):
    images, ids = _pool(100)
    good = prepare_image_dataset(images, ids, 28, 20, 5, seed=0)
    new = prepare_image_dataset(images, ids, 28, 30, 5, seed=1)
    real_save, calls = arrays_mod._save_npy, []

    def failing_save(path, array):  # dies after writing two of the four arrays
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill mid-write")
        real_save(path, array)

    monkeypatch.setattr(arrays_mod, "_save_npy", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "fresh", good)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temp sibling

    monkeypatch.setattr(arrays_mod, "_save_npy", real_save)
    write_dataset(tmp_path / "ds", good)
    monkeypatch.setattr(arrays_mod, "_save_npy", failing_save)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "ds", new)
    assert load_dataset(tmp_path / "ds").manifest["n_train"] == 20  # the old folder is intact
    monkeypatch.setattr(arrays_mod, "_save_npy", real_save)
    write_dataset(tmp_path / "ds", new)  # replacing works
    assert load_dataset(tmp_path / "ds").manifest["n_train"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_toy_dataset(tmp_path):
    ds = prepare_toy_dataset("gmm", 500, 200, seed=0)
    assert ds.train.shape == (500, 2) and ds.train.dtype == np.float32 and ds.heldout.shape == (200, 2)
    assert np.array_equal(ds.train, make_toy("gmm", 500, seed=0))
    assert ds.manifest["heldout_seed"] != 0
    assert not (ds.heldout[:, None] == ds.train[None]).all(-1).any()  # no shared points
    write_dataset(tmp_path / "toy", ds)
    back = load_dataset(tmp_path / "toy")
    assert back.manifest["kind"] == "toy2d" and not back.train_labels.any()
    assert torch.equal(back.train_float(), torch.from_numpy(ds.train))


def test_prepare_from_params_spec(tmp_path):
    toy = prepare_from_spec({"kind": "toy2d", "name": "ring", "n_heldout": 50, "seed": 2, "n_train": 100})
    assert toy.train.shape == (100, 2) and toy.manifest["spec"]["name"] == "ring"
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_cifar_archive(archive, n_per_batch=10)
    # a params entry names no md5: the official one applies, so a look-alike archive is refused
    with pytest.raises(DatasetError, match="checksum mismatch"):
        prepare_from_spec({"kind": "image", "name": "cifar10", "resolution": 32, "n_heldout": 5, "seed": 0,
                           "source": str(archive), "n_train": 20})


@needs_debian
def test_prepare_fashion_mnist_from_spec(tmp_path):
    spec = {"kind": "image", "name": "fashion_mnist", "resolution": 32, "n_heldout": 100, "seed": 0,
            "source": None, "n_train": 300}
    write_dataset(tmp_path / "fm", prepare_from_spec(spec))
    ds = load_dataset(tmp_path / "fm")
    assert ds.train_float().shape == (300, 1, 32, 32) and ds.manifest["resize"] == "pad"
    assert ds.manifest["source"]["checksums"]["train-images-idx3-ubyte"]["md5_idx"] == fm.MD5_IDX["train-images-idx3-ubyte"]
