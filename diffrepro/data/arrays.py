"""Prepared datasets: a seeded train subset and a disjoint held-out split, stored as a few .npy files
plus a manifest.json with provenance and sha256 hashes.

Folder layout (written atomically by `write_dataset`, checked by `load_dataset`):
    train.npy, heldout.npy              uint8 (N, H, W, C) images, or float32 (N, 2) toy points
    train_labels.npy, heldout_labels.npy int64 (N,) (zeros for toys)
    manifest.json                       name, kind, resolution, channels, n_train, n_heldout, seed,
                                        source (description + verified checksums), sha256 {file: hex},
                                        arrays {file: {shape, dtype}}

Subsets are nested: one seeded permutation of the pool; held-out = its first n_heldout entries,
train = the next n_train. With the same seed and n_heldout, the 500-image train set is a prefix of the
2000-image one, so dataset-size sweeps compare nested sets drawn from the same distribution.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..io import atomic_write_json
from ..seeding import derive_seed
from ..toy2d import make_toy
from .pixels import pad_to, resize_bicubic, to_channels, to_resolution  # noqa: F401 (re-exported)
from .sources import DatasetError, sha256_file

FORMAT_VERSION = 1
ARRAY_FILES = ("train.npy", "heldout.npy", "train_labels.npy", "heldout_labels.npy")
SPLIT_RULE = ("perm = numpy.random.default_rng(seed).permutation(pool_size); "
              "heldout = perm[:n_heldout]; train = perm[n_heldout:n_heldout + n_train]")


@dataclass
class PreparedDataset:
    train: np.ndarray            # uint8 (N, H, W, C) or float32 (N, 2)
    heldout: np.ndarray
    train_labels: np.ndarray     # int64 (N,)
    heldout_labels: np.ndarray
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def train_float(self) -> torch.Tensor:
        """float32 NCHW in [-1, 1] for images (x / 127.5 - 1, as EDM); float32 (N, 2) for toys."""
        return _to_float(self.train, self.kind)

    def heldout_float(self) -> torch.Tensor:
        return _to_float(self.heldout, self.kind)

    def arrays(self) -> dict:
        return dict(zip(ARRAY_FILES, (self.train, self.heldout, self.train_labels, self.heldout_labels)))


def _to_float(x: np.ndarray, kind: str) -> torch.Tensor:
    if kind == "toy2d":
        return torch.from_numpy(np.array(x, dtype=np.float32))
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1).contiguous()


# --- selection -----------------------------------------------------------------------------------

def split_indices(pool_size: int, n_train: Optional[int], n_heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) indices into a pool, disjoint and nested in n_train (see SPLIT_RULE).
    n_train None or 0 means every image not held out."""
    if n_heldout < 0 or (n_train or 0) < 0:
        raise ValueError(f"n_train and n_heldout must be >= 0, got {n_train}, {n_heldout}")
    n_train = n_train or max(pool_size - n_heldout, 0)
    if n_train + n_heldout > pool_size or n_train == 0:
        raise ValueError(f"n_train={n_train} + n_heldout={n_heldout} does not fit in a pool of {pool_size} "
                         "items (need n_train >= 1); lower n_train or n_heldout")
    perm = np.random.default_rng(seed).permutation(pool_size)
    return perm[n_heldout:n_heldout + n_train], perm[:n_heldout]


# --- preparation ---------------------------------------------------------------------------------

def prepare_image_dataset(images: np.ndarray, labels: np.ndarray, resolution: int, n_train: Optional[int],
                          n_heldout: int, seed: int, *, name: str = "images", source: Optional[dict] = None,
                          resize: str = "auto", channels: Optional[int] = None) -> PreparedDataset:
    """Seeded nested train subset + disjoint held-out split of one image pool, at `resolution` and
    `channels` (None: the pool's own), converted as diffrepro.data.pixels describes.
    images: uint8 (N, H, W, C) or (N, H, W); labels: (N,) ints; source: provenance from a loader
    (RawSplit.source)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (len(images),):
        raise ValueError(f"labels shape {labels.shape} does not match {len(images)} images")
    channels = int(channels or images.shape[-1])
    train_idx, heldout_idx = split_indices(len(images), n_train, n_heldout, seed)
    train, method = to_resolution(to_channels(images[train_idx], channels), resolution, resize)
    heldout, _ = to_resolution(to_channels(images[heldout_idx], channels), resolution, method)
    manifest = {
        "format_version": FORMAT_VERSION, "name": name, "kind": "image",
        "resolution": int(resolution), "channels": channels, "source_channels": int(images.shape[-1]),
        "n_train": len(train_idx), "n_heldout": len(heldout_idx), "seed": int(seed),
        "pool_size": len(images), "source_resolution": list(images.shape[1:3]), "resize": method,
        "split_rule": SPLIT_RULE, "source": source or {"description": "in-memory arrays", "checksums": {}},
    }
    return PreparedDataset(train, heldout, labels[train_idx], labels[heldout_idx], manifest)


def prepare_toy_dataset(name: str, n_train: int, n_heldout: int, seed: int) -> PreparedDataset:
    """2D toy points from diffrepro.toy2d.make_toy: train = make_toy(name, n_train, seed); held-out
    from a different seed derived from `seed`, so the two never share a random stream."""
    if n_train <= 0 or n_heldout < 0:
        raise ValueError(f"need n_train >= 1 and n_heldout >= 0, got {n_train}, {n_heldout}")
    heldout_seed = derive_seed(seed, "toy2d-heldout")
    if heldout_seed == seed:
        heldout_seed += 1
    train = make_toy(name, n_train, seed=seed)
    heldout = make_toy(name, n_heldout, seed=heldout_seed)
    manifest = {
        "format_version": FORMAT_VERSION, "name": name, "kind": "toy2d", "resolution": None, "channels": 2,
        "n_train": n_train, "n_heldout": n_heldout, "seed": int(seed), "heldout_seed": int(heldout_seed),
        "source": {"description": f"diffrepro.toy2d.make_toy({name!r}); train seed {seed}, "
                                  f"held-out seed {heldout_seed}", "checksums": {}},
    }
    return PreparedDataset(train, heldout, np.zeros(n_train, np.int64), np.zeros(n_heldout, np.int64), manifest)


# --- on disk -------------------------------------------------------------------------------------

def _save_npy(path: Path, array: np.ndarray):
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def write_dataset(out_dir, dataset: PreparedDataset) -> dict:
    """Write the dataset folder atomically: everything goes into a hidden temporary sibling, which is
    then renamed onto `out_dir` (an old folder there is replaced). A failure or kill never leaves a
    partial `out_dir`; at worst a hidden `.<name>.tmp-*` sibling after a kill. Returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        hashes, layout = {}, {}
        for fname, array in dataset.arrays().items():
            _save_npy(tmp / fname, array)
            hashes[fname] = sha256_file(tmp / fname)
            layout[fname] = {"shape": list(array.shape), "dtype": str(array.dtype)}
        manifest = {**dataset.manifest, "sha256": hashes, "arrays": layout}
        atomic_write_json(tmp / "manifest.json", manifest)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _replace_dir(src: Path, dest: Path):
    """Rename folder src onto dest. An existing dest is moved aside first and deleted afterwards
    (POSIX cannot rename onto a non-empty folder); it is put back if the second rename fails."""
    if not dest.exists():
        os.rename(src, dest)
        return
    if not dest.is_dir():
        raise DatasetError(f"{dest} exists and is not a folder; remove it")
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(dest, old)
    try:
        os.rename(src, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def load_dataset(directory, verify: bool = True) -> PreparedDataset:
    """Load a prepared dataset folder; with verify, check every .npy against the manifest's sha256.
    Raises DatasetError naming the file when one is missing, altered, or inconsistent."""
    directory = Path(directory)
    rerun = f"Rerun the prepare stage to rebuild {directory}."
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise DatasetError(f"{manifest_path} not found: {directory} is not a prepared dataset. {rerun}")
    try:
        manifest = json.loads(manifest_path.read_text())
        hashes, layout = manifest["sha256"], manifest["arrays"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{manifest_path} is unreadable or incomplete ({e}). {rerun}") from e
    arrays = []
    for fname in ARRAY_FILES:
        path = directory / fname
        if fname not in hashes or fname not in layout:
            raise DatasetError(f"{manifest_path} does not list {fname}. {rerun}")
        if not path.is_file():
            raise DatasetError(f"{path} is missing. {rerun}")
        if verify:
            actual = sha256_file(path)
            if actual != hashes[fname]:
                raise DatasetError(f"{path}: sha256 {actual} differs from the manifest's {hashes[fname]}; "
                                   f"the file was modified or damaged. {rerun}")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{path}: cannot be read as .npy ({e}). {rerun}") from e
        if list(array.shape) != layout[fname]["shape"] or str(array.dtype) != layout[fname]["dtype"]:
            raise DatasetError(f"{path}: {array.dtype} {array.shape} does not match the manifest's "
                               f"{layout[fname]['dtype']} {layout[fname]['shape']}. {rerun}")
        arrays.append(array)
    return PreparedDataset(*arrays, manifest=manifest)
