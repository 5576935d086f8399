"""Test data builders: small datasets in every format the pipeline reads, made on the fly.

    images, labels = make_images(60, size=32, channels=3, classes=3)
    write_png_folder(tmp / "pngs", images, labels)          # class subfolders class0/, class1/, ...
    write_npz(tmp / "data.npz", images, labels)
    write_idx(tmp / "idx", images, labels)                   # train-images-idx3-ubyte, train-labels-idx1-ubyte
    md5, _ = make_cifar_archive(tmp / "cifar-10-python.tar.gz", n_per_batch=50)
    entries = user_dataset_entries(tmp)                       # params.yaml `datasets:` entries for all of them
"""
from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffrepro.data.sources import md5_file


def make_images(n: int, size: int = 32, channels: int = 3, classes: int = 1, seed: int = 0,
                height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, height, size, channels) images with structure (a coloured rectangle and a disc on a
    smooth gradient, placed at random), and labels in range(classes). Every image is distinct."""
    rng = np.random.default_rng(seed)
    h, w = height or size, size
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.empty((n, h, w, channels), np.uint8)
    for i in range(n):
        base = rng.uniform(0, 80, channels) + rng.uniform(0, 60, channels) * (xx[..., None] / w)
        img = np.broadcast_to(base, (h, w, channels)).copy()
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0:y0 + rng.integers(2, h // 2), x0:x0 + rng.integers(2, w // 2)] = rng.uniform(100, 255, channels)
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, max(3, h / 4))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, channels)
        images[i] = np.clip(np.round(img), 0, 255).astype(np.uint8)
        images[i, i % h, (i // h) % w, 0] ^= 0x80   # a marker pixel: no two images alike
    return images, rng.integers(0, classes, n).astype(np.int64)


def write_png_folder(folder, images: np.ndarray, labels: np.ndarray | None = None, ext: str = "png",
                     names=None, **save_kw) -> Path:
    """One file per image; with labels, in class subfolders named class<label>. names: file stems
    (default: 00000, 00001, ...); save_kw go to PIL's save (e.g. quality= for JPEG)."""
    folder = Path(folder)
    for i, img in enumerate(images):
        sub = folder / f"class{labels[i]}" if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        stem = names[i] if names is not None else f"{i:05d}"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(sub / f"{stem}.{ext}", **save_kw)
    return folder


def write_npz(path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels is None:
        np.savez(path, images=images)
    else:
        np.savez(path, images=images, labels=labels)
    return path


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file: 00 00 <type> <rank>, big-endian uint32 sizes, then the values big-endian."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(folder, images: np.ndarray, labels: np.ndarray | None = None, prefix: str = "train",
              gz: bool = False) -> Path:
    """MNIST-style files <prefix>-images-idx3-ubyte (+ <prefix>-labels-idx1-ubyte), gzipped with gz.
    Gray images are written as (N, H, W) (idx3), colour ones as (N, H, W, C) (rank 4). Returns the
    images file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array = images[..., 0] if images.shape[-1] == 1 else images
    files = {f"{prefix}-images-idx3-ubyte": idx_bytes(array)}
    if labels is not None:
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels.astype(np.uint8))
    for name, data in files.items():
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return folder / (f"{prefix}-images-idx3-ubyte" + (".gz" if gz else ""))


def make_cifar_archive(path, n_per_batch: int = 20, seed: int = 0, batches=None,
                       images_fn=None) -> tuple[str, dict]:
    """Write a cifar-10-python.tar.gz look-alike: cifar-10-batches-py/data_batch_1..5, test_batch and
    batches.meta, each a protocol-2 pickle as in the official archive ({b'data': uint8 (n, 3072) R, G, B
    planes, b'labels': [int], b'batch_label', b'filenames'}). images_fn(n, seed) -> uint8 (n, 32, 32, 3)
    makes the images (default: uniform noise). Returns (md5 of the archive, {member: (HWC uint8 images,
    int64 labels, rows)})."""
    rng = np.random.default_rng(seed)
    batches = batches or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = {}
    with tarfile.open(path, "w:gz") as tar:
        def add(name, obj):
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        add("batches.meta", {b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                              b"horse", b"ship", b"truck"], b"num_cases_per_batch": n_per_batch,
                             b"num_vis": 3072})
        for k, name in enumerate(batches):
            images = (images_fn(n_per_batch, seed + 1 + k) if images_fn is not None
                      else rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8))
            labels = rng.integers(0, 10, n_per_batch)
            rows = images.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)  # HWC -> CHW planes
            add(name, {b"batch_label": name.encode(), b"data": rows, b"labels": [int(v) for v in labels],
                       b"filenames": [b"img%d.png" % i for i in range(n_per_batch)]})
            expected[name] = (images, labels.astype(np.int64), rows)
    return md5_file(path), expected


def user_dataset_entries(root, n: int = 120, size: int = 32, seed: int = 0) -> dict:
    """Write the same n RGB images (3 classes) as a PNG folder, an .npz and IDX files under root, and a
    CIFAR-10-format archive of 5 x n/5 + n/5 images; return `datasets:` entries for params.yaml
    ({'pngs', 'arr', 'idx', 'cifar'}: {kind: image, ...})."""
    root = Path(root)
    images, labels = make_images(n, size=size, channels=3, classes=3, seed=seed)
    write_png_folder(root / "pngs", images, labels)
    write_npz(root / "images.npz", images, labels)
    write_idx(root / "idx", images, labels)
    md5, _ = make_cifar_archive(root / "cifar-10-python.tar.gz", n_per_batch=max(n // 5, 2), seed=seed,
                                images_fn=lambda k, s: make_images(k, 32, 3, seed=s)[0])
    common = {"kind": "image", "resolution": size, "n_heldout": 20, "seed": 0}
    return {"pngs": {**common, "format": "folder", "source": str(root / "pngs")},
            "arr": {**common, "format": "array", "source": str(root / "images.npz")},
            "idx": {**common, "format": "idx", "source": str(root / "idx")},
            "cifar": {"kind": "image", "name": "cifar10", "resolution": 32, "n_heldout": 10, "heldout_split": "test",
                      "seed": 0, "source": str(root / "cifar-10-python.tar.gz"), "md5": md5}}


# --- params for end-to-end runs on these datasets ---------------------------------------------------------

def with_dataset(params: dict, entry: dict, name: str = "mine", replace: str = "fmnist", profile: str = "smoke",
                 sizes=None) -> dict:
    """A copy of params in which `profile` trains on `entry` (as datasets.<name>) wherever it trained on
    datasets.<replace>, with that dataset's FID reference count carried over; sizes replaces the
    experiments' sizes (default: kept)."""
    import copy
    p = copy.deepcopy(params)
    p["datasets"][name] = dict(entry)
    prof = p["profiles"][profile]
    for exp in prof["experiments"]:
        if exp["dataset"] == replace:
            exp["dataset"] = name
            if sizes is not None:
                exp["sizes"] = list(sizes)
    refs = prof.get("fid_reference", {})
    if replace in refs:
        refs[name] = refs.pop(replace)
    return p


def paper_on_small_archive(params: dict, cifar_entry: dict, n_train: int = 40, steps: int = 20,
                           num_samples: int = 16, ref_count: int = 32, seeds=(0,), augment: float | None = None) -> dict:
    """A copy of params whose `paper` profile runs on CPU in minutes: datasets.cifar10 points at a small
    archive in the official format (cifar_entry from user_dataset_entries, with its md5), the EDM CIFAR-10
    training configuration keeps its method, sampler and augmentation but gets a tiny network and a few steps,
    few samples, few seeds and a small FID reference. The profile's FID mode (the papers') is left as it is.
    augment: another augmentation probability for the training configuration (default: the profile's)."""
    import copy
    p = copy.deepcopy(params)
    p["datasets"]["cifar10"] = {"allow_download": False, **cifar_entry}
    prof = p["profiles"]["paper"]
    prof.update(device="cpu", gpus_per_job=0, fid_reference={"cifar10": ref_count})
    tname = prof["experiments"][0]["training"]
    small = {**p["training"][tname], "network": "tiny", "steps": steps, "batch_size": 8, "checkpoint_every": steps,
             "log_every": steps, "lr_warmup_img": 0, "ema_halflife_img": 100, "precision": "fp32", "fast": False}
    if augment is not None:
        small["augment"] = augment
    p["training"][tname] = small
    for exp in prof["experiments"]:
        exp.update(sizes=[n_train], num_samples=num_samples, seeds=list(seeds))
    return p
