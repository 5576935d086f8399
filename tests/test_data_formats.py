"""Your own data: image folders, .npz/.npy arrays and IDX files of any size; channel and resolution
rules; identity from content (pixel hash, content order, fingerprints); errors that name the file and
the fix; the CIFAR-10 loader end to end on an archive in the official format."""
import gzip
import os

import numpy as np
import pytest
from PIL import Image

from data_helpers import (idx_bytes, make_cifar_archive, make_images, user_dataset_entries, write_idx, write_npz,
                          write_png_folder)
from diffrepro.data import (DatasetError, available, fingerprint, load_dataset, load_own, load_pool, pixels_sha256,
                            prepare_from_spec, reference_images, to_channels, to_resolution, write_dataset)
from diffrepro.data import identity as identity_mod
from diffrepro.data.content import content_order


def spec(fmt, source, **kw):
    return {"key": "mine", "kind": "image", "format": fmt, "source": str(source), "n_heldout": 5, "seed": 0,
            "n_train": 20, **kw}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFREPRO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def rgb():
    return make_images(40, size=16, channels=3, classes=3, seed=1)


def as_set(images):
    return sorted(img.tobytes() for img in images)


# --- the three formats read the same pixels ---------------------------------------------------------

def test_folder_array_idx_load_the_same_pool_in_content_order(tmp_path, rgb):
    images, labels = rgb
    write_png_folder(tmp_path / "pngs", images, labels)
    write_npz(tmp_path / "a.npz", images, labels)
    write_idx(tmp_path / "idx", images, labels, gz=True)
    raws = {fmt: load_own(fmt, src) for fmt, src in
            [("folder", tmp_path / "pngs"), ("array", tmp_path / "a.npz"), ("idx", tmp_path / "idx")]}
    order = content_order(images, labels)
    for fmt, raw in raws.items():
        assert raw.images.dtype == np.uint8 and raw.images.shape == (40, 16, 16, 3), fmt
        np.testing.assert_array_equal(raw.images, images[order], err_msg=fmt)
        assert raw.source["content"]["pixels_sha256"] == pixels_sha256(images)
    # class subfolders class0..class2 -> labels 0..2 (sorted names); the array's and IDX's labels as given
    np.testing.assert_array_equal(raws["folder"].labels, labels[order])
    np.testing.assert_array_equal(raws["idx"].labels, labels[order])
    assert raws["folder"].source["classes"] == ["class0", "class1", "class2"]
    # the same pixels prepare into identical datasets, whatever the format
    prepared = [prepare_from_spec(spec(fmt, src)) for fmt, src in
                [("folder", tmp_path / "pngs"), ("array", tmp_path / "a.npz"), ("idx", tmp_path / "idx")]]
    for ds in prepared[1:]:
        np.testing.assert_array_equal(ds.train, prepared[0].train)
        np.testing.assert_array_equal(ds.heldout_labels, prepared[0].heldout_labels)
    assert prepared[0].manifest["format"] == "folder" and prepared[0].manifest["name"] == "mine"


def test_pixel_hash_ignores_names_and_order_but_not_pixels(tmp_path, rgb):
    images, labels = rgb
    write_png_folder(tmp_path / "a", images, labels)
    renamed = [f"img_{(i * 7919) % 1000:04d}_{i}" for i in range(len(images))]
    write_png_folder(tmp_path / "b", images, labels, names=renamed)
    a, b = load_own("folder", tmp_path / "a"), load_own("folder", tmp_path / "b")
    assert a.source["content"] == b.source["content"]
    ds_a, ds_b = prepare_from_spec(spec("folder", tmp_path / "a")), prepare_from_spec(spec("folder", tmp_path / "b"))
    np.testing.assert_array_equal(ds_a.train, ds_b.train)       # same subsets: file names play no part
    perm = np.random.default_rng(3).permutation(len(images))
    write_npz(tmp_path / "shuffled.npz", images[perm], labels[perm])
    assert load_own("array", tmp_path / "shuffled.npz").source["content"] == a.source["content"]
    changed = images.copy()
    changed[17, 3, 4, 1] ^= 1                                    # one pixel, one bit
    write_npz(tmp_path / "changed.npz", changed, labels)
    c = load_own("array", tmp_path / "changed.npz").source["content"]
    assert c["pixels_sha256"] != a.source["content"]["pixels_sha256"]
    relabelled = labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 3
    write_npz(tmp_path / "relabelled.npz", images, relabelled)
    r = load_own("array", tmp_path / "relabelled.npz").source["content"]
    assert r["pixels_sha256"] == a.source["content"]["pixels_sha256"]
    assert r["labels_sha256"] != a.source["content"]["labels_sha256"]


def test_folder_modes_channels_and_jpeg(tmp_path):
    gray, _ = make_images(6, size=12, channels=1, seed=2)
    write_png_folder(tmp_path / "gray", gray)
    raw = load_own("folder", tmp_path / "gray")
    assert raw.images.shape == (6, 12, 12, 1) and not raw.labels.any()
    assert as_set(raw.images) == as_set(gray)
    # one colour image among gray ones: everything loads as RGB, gray replicated
    color, _ = make_images(1, size=12, channels=3, seed=3)
    Image.fromarray(color[0]).convert("RGBA").save(tmp_path / "gray" / "zz_color.png")  # alpha is dropped
    raw = load_own("folder", tmp_path / "gray")
    assert raw.images.shape == (7, 12, 12, 3)
    assert as_set(raw.images) == as_set(np.concatenate([np.repeat(gray, 3, -1), color]))
    # JPEG (lossy): read, right size, close to the original
    write_png_folder(tmp_path / "jpg", color, ext="jpg", quality=98, subsampling=0)
    got = load_own("folder", tmp_path / "jpg").images
    assert got.shape == (1, 12, 12, 3) and np.abs(got.astype(int) - color.astype(int)).mean() < 3


def test_channel_conversion_matches_pil():
    images, _ = make_images(5, size=10, channels=3, seed=4)
    images[0] = np.random.default_rng(0).integers(0, 256, images[0].shape)
    gray = to_channels(images, 1)
    want = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in images])[..., None]
    np.testing.assert_array_equal(gray, want)
    np.testing.assert_array_equal(to_channels(gray, 3), np.repeat(gray, 3, -1))
    assert to_channels(images, 3) is images


def test_resize_filters_and_non_square_rules():
    images, _ = make_images(3, size=16, channels=3, seed=5)
    box, how = to_resolution(images, 8, "box")
    mean = images.reshape(3, 8, 2, 8, 2, 3).astype(float).mean((2, 4))
    assert how == "box" and np.abs(box - mean).max() <= 1      # box = the 2x2 mean (PIL: fixed-point rounding)
    nearest, _ = to_resolution(images, 32, "nearest")
    np.testing.assert_array_equal(nearest[:, ::2, ::2], images)          # integer upscale copies pixels
    assert to_resolution(images, 16, "lanczos")[0] is images            # same size: unchanged
    wide, _ = make_images(2, size=20, height=16, channels=1, seed=6)
    with pytest.raises(ValueError, match="not square"):
        to_resolution(wide, 16, "bicubic")
    padded, how = to_resolution(wide, 20, "pad")
    assert how == "pad" and padded.shape == (2, 20, 20, 1)
    np.testing.assert_array_equal(padded[:, 2:18], wide)
    with pytest.raises(ValueError, match="resize method"):
        to_resolution(images, 8, "cubic")


def test_prepared_entry_applies_channels_and_resolution(tmp_path, rgb):
    images, labels = rgb
    write_png_folder(tmp_path / "pngs", images, labels)
    ds = prepare_from_spec(spec("folder", tmp_path / "pngs", resolution=8, channels=1, resize="box"))
    assert ds.train.shape == (20, 8, 8, 1) and ds.heldout.shape == (5, 8, 8, 1)
    m = ds.manifest
    assert (m["channels"], m["source_channels"], m["resolution"], m["resize"]) == (1, 3, 8, "box")
    pool = images[content_order(images, labels)]
    from diffrepro.data import split_indices
    train_idx, _ = split_indices(40, 20, 5, 0)
    want, _ = to_resolution(to_channels(pool[train_idx], 1), 8, "box")
    np.testing.assert_array_equal(ds.train, want)
    write_dataset(tmp_path / "out", ds)
    back = load_dataset(tmp_path / "out")
    assert back.manifest["source"]["content"]["pixels_sha256"] == pixels_sha256(images)
    assert back.train_float().shape == (20, 1, 8, 8)
    ref, how, prov = reference_images(spec("folder", tmp_path / "pngs", resolution=8, channels=1, resize="box"))
    assert ref.shape == (40, 8, 8, 1) and how == "box" and prov["content"]["n_images"] == 40
    sub, _, _ = reference_images(spec("folder", tmp_path / "pngs", n_heldout=10), count=10)
    assert sub.shape == (10, 16, 16, 3)
    held = prepare_from_spec(spec("folder", tmp_path / "pngs", n_heldout=10)).heldout
    assert as_set(sub) != as_set(held)             # a stream of its own: not the held-out split


# --- checks and the errors they raise ----------------------------------------------------------------

def test_enough_images_and_heldout_rules(tmp_path, rgb):
    images, labels = rgb
    write_npz(tmp_path / "a.npz", images, labels)
    with pytest.raises(DatasetError, match=r"a\.npz.*40 images.*n_train \(36\) \+ n_heldout \(5\) = 41.*"
                                           r"datasets\.mine\.n_heldout"):
        prepare_from_spec(spec("array", tmp_path / "a.npz", n_train=36))
    assert prepare_from_spec(spec("array", tmp_path / "a.npz", n_train=35)).train.shape[0] == 35
    # a given held-out set: a separate file; then the whole pool can be trained on
    held, held_labels = make_images(12, size=16, channels=3, seed=9)
    write_npz(tmp_path / "held.npz", held, held_labels)
    ds = prepare_from_spec(spec("array", tmp_path / "a.npz", n_train=40, n_heldout=12,
                                heldout_source=str(tmp_path / "held.npz")))
    assert ds.train.shape[0] == 40 and as_set(ds.heldout) == as_set(held)
    assert ds.manifest["heldout_source"]["content"]["pixels_sha256"] == pixels_sha256(held)
    with pytest.raises(DatasetError, match=r"held\.npz.*12 images.*n_heldout = 13"):
        prepare_from_spec(spec("array", tmp_path / "a.npz", n_heldout=13, heldout_source=str(tmp_path / "held.npz")))
    with pytest.raises(DatasetError, match="heldout_source"):
        prepare_from_spec(spec("array", tmp_path / "a.npz", heldout_split="test"))
    # IDX folders carry their test split as t10k files
    write_idx(tmp_path / "idx", images, labels)
    write_idx(tmp_path / "idx", held, held_labels, prefix="t10k")
    ds = prepare_from_spec(spec("idx", tmp_path / "idx", heldout_split="test", n_heldout=0, n_train=None))
    assert ds.train.shape[0] == 40 and as_set(ds.heldout) == as_set(held)


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no image files found"),
    (lambda d: (d / "notes.txt").write_text("hi"), "no image files found"),
    (lambda d: write_png_folder(d, make_images(2, 8)[0], np.array([0, 1])) and
     Image.new("RGB", (8, 8)).save(d / "top.png"), "both directly inside it"),
    (lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), Image.new("RGB", (8, 6)).save(d / "b.png")),
     r"different sizes: a\.png is 8x8, b\.png is 8x6"),
    (lambda d: (Image.new("RGB", (8, 8)).save(d / "a.png"), (d / "b.png").write_bytes(b"not a png")),
     r"b\.png: cannot be read as an image.*Remove or replace"),
    (lambda d: Image.new("I;16", (8, 8)).save(d / "deep.png"), r"deep\.png: I;16 image.*8-bit"),
])
def test_folder_errors_name_the_file(tmp_path, make, message):
    folder = tmp_path / "imgs"
    folder.mkdir()
    make(folder)
    with pytest.raises(DatasetError, match=message) as err:
        load_own("folder", folder)
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 3, 16, 16), np.uint8), r"channels-first.*transpose\(0, 2, 3, 1\)"),
    (np.zeros((4, 16, 16, 4), np.uint8), r"x\[\.\.\., :3\]"),
    (np.linspace(-1, 1, 4 * 256).reshape(4, 16, 16).astype(np.float32), r"\(x \+ 1\) \* 127\.5"),
    (np.linspace(0, 1, 4 * 256).reshape(4, 16, 16), r"x \* 255"),
    (np.full((4, 8, 8), 300, np.int64), r"int64 values in \[300, 300\]"),
    (np.zeros((0, 8, 8), np.uint8), "holds no images"),
    (np.zeros((4, 8), np.uint8), r"\(N, H, W\) or \(N, H, W, C\)"),
])
def test_array_errors_say_how_to_fix(tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(DatasetError, match=message) as err:
        load_own("array", tmp_path / "x.npy")
    assert "x.npy" in str(err.value)


def test_array_keys_and_integer_types(tmp_path):
    images, labels = make_images(6, size=8, channels=1, seed=7)
    np.savez(tmp_path / "one.npz", x=images.astype(np.int64))           # one array, any name; lossless ints
    assert as_set(load_own("array", tmp_path / "one.npz").images) == as_set(images)
    np.savez(tmp_path / "two.npz", x=images, y=labels)
    with pytest.raises(DatasetError, match=r"two\.npz: holds arrays \['x', 'y'\]; name the image array 'images'"):
        load_own("array", tmp_path / "two.npz")
    np.savez(tmp_path / "bad_labels.npz", images=images, labels=labels[:3])
    with pytest.raises(DatasetError, match=r"bad_labels\.npz:labels: labels must be integers of shape \(6,\)"):
        load_own("array", tmp_path / "bad_labels.npz")
    (tmp_path / "pickled.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"pickled\.npy: cannot be read"):
        load_own("array", tmp_path / "pickled.npy")
    with pytest.raises(DatasetError, match=r"missing\.npz: no such file"):
        load_own("array", tmp_path / "missing.npz")


def test_idx_of_any_size_and_its_errors(tmp_path):
    images, labels = make_images(7, size=20, channels=1, seed=8)          # not 28x28, not 60,000
    path = write_idx(tmp_path / "a", images, labels, prefix="letters")
    raw = load_own("idx", path)                                           # the images file itself
    assert raw.images.shape == (7, 20, 20, 1) and as_set(raw.images) == as_set(images)
    assert sorted(raw.labels) == sorted(labels)
    assert raw.source["files"][1].endswith("letters-labels-idx1-ubyte")
    rgb, _ = make_images(3, size=8, channels=3, seed=9)                   # rank-4 IDX: (N, H, W, C)
    assert load_own("idx", write_idx(tmp_path / "c", rgb)).images.shape == (3, 8, 8, 3)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte").write_bytes(idx_bytes(images.astype(np.float32)[..., 0], 0x0D))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: IDX values are float32"):
        load_own("idx", bad)
    (bad / "train-images-idx3-ubyte").write_bytes(idx_bytes(images[..., 0])[:-5])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: IDX header says shape \(7, 20, 20\).*truncated"):
        load_own("idx", bad)
    (bad / "train-images-idx3-ubyte").write_bytes(gzip.compress(idx_bytes(images[..., 0]))[:-9])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: corrupt or truncated gzip"):
        load_own("idx", bad)
    (bad / "train-images-idx3-ubyte").write_bytes(idx_bytes(images[..., 0]))
    (bad / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:5].astype(np.uint8)))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: labels must be integers of shape \(7,\)"):
        load_own("idx", bad)
    with pytest.raises(DatasetError, match=r"empty: no train-images-idx3-ubyte\[\.gz\] found"):
        (tmp_path / "empty").mkdir()
        load_own("idx", tmp_path / "empty")


# --- fingerprints --------------------------------------------------------------------------------------

def test_fingerprint_follows_content_not_names(tmp_path, rgb, monkeypatch):
    images, labels = rgb
    write_png_folder(tmp_path / "a", images, labels)
    entry = {"kind": "image", "format": "folder", "source": str(tmp_path / "a")}
    fp = fingerprint(entry)
    os.rename(tmp_path / "a", tmp_path / "moved")                        # another path, same files
    entry["source"] = str(tmp_path / "moved")
    assert fingerprint(entry) == fp
    f = sorted((tmp_path / "moved" / "class1").iterdir())[0]
    f.rename(f.with_name("renamed.png"))                                   # a file name: no change
    assert fingerprint(entry) == fp
    img = Image.open(f.with_name("renamed.png"))
    arr = np.asarray(img).copy()
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(f.with_name("renamed.png"))                  # one pixel: a new fingerprint
    fp2 = fingerprint(entry)
    assert fp2 != fp
    os.rename(tmp_path / "moved" / "class2", tmp_path / "moved" / "class9")  # a class: a new fingerprint
    assert fingerprint(entry) != fp2
    # digests are cached by (path, size, mtime_ns): a second call reads no file
    calls = []
    real = identity_mod.sha256_file
    monkeypatch.setattr(identity_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    fingerprint(entry)
    assert calls == []
    os.utime(f.with_name("renamed.png"), ns=(1, 1))
    fingerprint(entry)
    assert [p.name for p in calls] == ["renamed.png"]
    # arrays and IDX: file bytes; known datasets: their official checksums, wherever they are
    write_npz(tmp_path / "x.npz", images, labels)
    a = fingerprint({"kind": "image", "format": "array", "source": str(tmp_path / "x.npz")})
    write_npz(tmp_path / "x.npz", images[::-1], labels[::-1])
    assert fingerprint({"kind": "image", "format": "array", "source": str(tmp_path / "x.npz")}) != a
    fm = [fingerprint({"kind": "image", "name": "fashion_mnist", "source": s}) for s in (None, "/elsewhere")]
    assert fm[0] == fm[1]
    assert fingerprint({"kind": "image", "name": "cifar10"}) != fingerprint({"kind": "image", "name": "cifar10",
                                                                            "md5": "0" * 32})
    assert fingerprint({"kind": "toy2d", "name": "gmm"}) is None          # generated: the spec says it all
    with pytest.raises(DatasetError, match="nowhere"):
        fingerprint({"kind": "image", "format": "folder", "source": str(tmp_path / "nowhere")})


def test_available_counts_from_listings_and_headers(tmp_path):
    images, labels = make_images(30, size=8, channels=1, seed=3)
    write_png_folder(tmp_path / "pngs", images, labels)
    write_npz(tmp_path / "a.npz", images, labels)
    np.save(tmp_path / "a.npy", images)
    write_idx(tmp_path / "idx", images, labels, gz=True)
    for fmt, src in (("folder", "pngs"), ("array", "a.npz"), ("array", "a.npy"), ("idx", "idx")):
        entry = {"kind": "image", "format": fmt, "source": str(tmp_path / src), "n_heldout": 4}
        assert available(entry) == 26 and available(entry, reference=True) == 30, fmt
        assert available({**entry, "heldout_source": "elsewhere"}) == 30
    assert available({"kind": "image", "format": "array", "source": str(tmp_path / "none.npz")}) is None
    assert available({"kind": "image", "name": "fashion_mnist", "n_heldout": 1000}) == 59_000
    assert available({"kind": "image", "name": "cifar10", "md5": "0" * 32}) is None


# --- CIFAR-10 end to end on an archive in the official format ----------------------------------------

def test_cifar10_entry_end_to_end(tmp_path):
    entries = user_dataset_entries(tmp_path, n=60)
    entry = {**entries["cifar"], "key": "cifar10", "n_train": 40}
    _, expected = make_cifar_archive(tmp_path / "again.tar.gz", n_per_batch=12, seed=0,
                                     images_fn=lambda k, s: make_images(k, 32, 3, seed=s)[0])
    ds = prepare_from_spec(entry)
    write_dataset(tmp_path / "out", ds)
    back = load_dataset(tmp_path / "out")
    train_pool = np.concatenate([expected[f"data_batch_{i}"][0] for i in range(1, 6)])
    from diffrepro.data import split_indices
    idx, _ = split_indices(60, 40, 0, 0)
    np.testing.assert_array_equal(back.train, train_pool[idx])             # the official order is kept
    assert back.heldout.shape == (10, 32, 32, 3) and set(as_set(back.heldout)) <= set(as_set(expected["test_batch"][0]))
    src = back.manifest["source"]
    assert src["checksums"]["cifar-10-python.tar.gz"]["md5"] == entry["md5"] and src["order"] == "official"
    assert src["content"]["pixels_sha256"] == pixels_sha256(train_pool)
    assert back.manifest["heldout_source"]["content"]["n_images"] == 12
    ref, how, _ = reference_images(entry)
    assert how == "none"
    np.testing.assert_array_equal(ref, train_pool)
    with pytest.raises(DatasetError, match="checksum mismatch"):         # without md5: the official one
        load_pool({k: v for k, v in entry.items() if k != "md5"})
    with pytest.raises(DatasetError, match=r"60 images, but n_train = 61"):
        prepare_from_spec({**entry, "n_train": 61})
