"""From a params.yaml dataset entry to a prepared dataset: the functions the prepare and fidref stages call.

A spec is a `datasets.<entry>` mapping plus its entry name and n_train, as
diffrepro.pipeline.plan.dataset_identity builds it, with the paths of its files added back by the stage
(`source`, `heldout_source`, `allow_download` come from its command line, not from the spec). Image entries
name either a known dataset or a format of your own data:

    {kind: image, name: fashion_mnist | cifar10, source?, allow_download?, md5?, ...}
    {kind: image, format: folder | array | idx, source: <path>, heldout_source?, ...}

plus resolution, channels, resize (see pixels.py), n_heldout, heldout_split (train | test), seed.

Held-out images are, in this order of precedence: drawn from `heldout_source` (your own data), or from
the test split with `heldout_split: test` (known datasets; an IDX folder's t10k files), or carved out of
the training pool with `seed` (the default). In the first two cases n_heldout images are drawn with
`seed` (0: all of them).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..seeding import derive_seed
from .arrays import PreparedDataset, prepare_image_dataset, prepare_toy_dataset
from .cifar10 import MD5 as CIFAR10_MD5
from .cifar10 import load_cifar10
from .content import describe_content
from .fashion_mnist import load_fashion_mnist
from .formats import FORMATS, load_own
from .pixels import to_channels, to_resolution
from .sources import DatasetError, RawSplit

IMAGE_DATASETS = ("fashion_mnist", "cifar10")


def load_raw(name: str, split: str = "train", source=None, allow_download: bool = False,
             cache_dir=None, md5: Optional[str] = None, url: Optional[str] = None) -> RawSplit:
    """Verified raw split of a known image dataset; `source` is a folder (Fashion-MNIST) or the
    archive / its folder (CIFAR-10); `md5` replaces CIFAR-10's official archive md5 (a re-packed copy);
    `url` replaces the official download address (a mirror: CIFAR-10's archive, Fashion-MNIST's folder)."""
    where = {"url": url} if url else {}
    if name == "fashion_mnist":
        return load_fashion_mnist(split, source=source, allow_download=allow_download, cache_dir=cache_dir, **where)
    if name == "cifar10":
        return load_cifar10(split, archive=source, allow_download=allow_download, cache_dir=cache_dir,
                            md5=md5 or CIFAR10_MD5, **where)
    raise ValueError(f"unknown image dataset {name!r}; choose one of {IMAGE_DATASETS}, or give your own data "
                     f"with format: {' | '.join(FORMATS)}")


def _entry(spec: dict) -> str:
    name = spec.get("entry") or spec.get("key")
    return f"datasets.{name}" if name else "the dataset entry"


def load_pool(spec: dict, split: str = "train", cache_dir=None) -> RawSplit:
    """The images of an image entry's training pool (split 'train') or given held-out split ('test'),
    with provenance that includes a hash of the loaded pixels (content.describe_content)."""
    fmt = spec.get("format")
    if fmt:
        source = spec.get("source")
        if split == "train":
            return load_own(fmt, source, "train")
        if spec.get("heldout_source"):
            return load_own(fmt, spec["heldout_source"], "test" if fmt == "idx" and _is_idx_folder(spec["heldout_source"])
                            else "train")
        if fmt == "idx":
            return load_own(fmt, source, "test")
        raise DatasetError(f"{_entry(spec)}: heldout_split: test needs the held-out images: set heldout_source to "
                           f"a {fmt} of them, or drop heldout_split to carve n_heldout images out of {source}")
    raw = load_raw(spec["name"], split, spec.get("source"), spec.get("allow_download", False), cache_dir,
                   spec.get("md5"), spec.get("url"))
    raw.source.update(content=describe_content(raw.images, raw.labels), order="official")
    return raw


def _is_idx_folder(path) -> bool:
    from pathlib import Path
    p = Path(path).expanduser()
    return p.is_dir() and any(p.glob("t10k-images-idx3-ubyte*"))


def _too_few(spec: dict, raw: RawSplit, needed: int, what: str) -> DatasetError:
    return DatasetError(
        f"{raw.source['description']}: {len(raw.images)} images, but {what} = {needed} are needed for "
        f"{_entry(spec)}. Lower the subset size (profiles.<profile>.experiments[].sizes) or "
        f"{_entry(spec)}.n_heldout, or add images.")


def prepare_from_spec(spec: dict, cache_dir: Optional[str] = None) -> PreparedDataset:
    """Prepare the subset a spec describes (see the module docstring for the held-out rule). The spec
    is stored in the manifest under 'spec'."""
    n_train, n_heldout, seed = spec.get("n_train"), spec.get("n_heldout", 0), spec.get("seed", 0)
    if spec["kind"] == "toy2d":
        ds = prepare_toy_dataset(spec["name"], n_train, n_heldout, seed)
        ds.manifest["spec"] = dict(spec)
        return ds
    if spec["kind"] != "image":
        raise ValueError(f"unknown dataset kind {spec['kind']!r}; use 'image' or 'toy2d'")
    raw = load_pool(spec, "train", cache_dir)
    given = heldout_apart(spec)
    if given:
        if (n_train or 0) > len(raw.images):
            raise _too_few(spec, raw, n_train, "n_train")
    elif (n_train or 1) + n_heldout > len(raw.images):
        raise _too_few(spec, raw, (n_train or 1) + n_heldout, f"n_train ({n_train or 1}) + n_heldout ({n_heldout})")
    resolution = spec.get("resolution") or raw.images.shape[1]
    channels = spec.get("channels") or raw.images.shape[-1]
    resize = spec.get("resize", "auto")
    name = spec.get("name") or spec.get("entry") or spec.get("key") or spec.get("format")
    try:
        ds = prepare_image_dataset(raw.images, raw.labels, resolution, n_train, 0 if given else n_heldout, seed,
                                   name=name, source=raw.source, resize=resize, channels=channels)
        if given:  # held-out from the given split: lets the training subset be the whole training pool
            test = load_pool(spec, "test", cache_dir)
            if n_heldout > len(test.images):
                raise _too_few(spec, test, n_heldout, "n_heldout")
            ho = prepare_image_dataset(test.images, test.labels, resolution, n_heldout, 0, seed, name=name,
                                       source=test.source, resize=resize, channels=channels)
            ds.heldout, ds.heldout_labels = ho.train, ho.train_labels
            ds.manifest.update(n_heldout=len(ho.train), heldout_split="test", heldout_source=test.source)
    except ValueError as e:  # a resize rule that cannot apply to these images
        raise DatasetError(f"{raw.source['description']}: {e} ({_entry(spec)}.resolution / .resize)") from e
    if spec.get("format"):
        ds.manifest["format"] = spec["format"]
    ds.manifest["spec"] = dict(spec)
    return ds


def heldout_apart(spec: dict) -> bool:
    """Whether an image entry's held-out images lie apart from its training pool (a test split or a
    heldout_source), rather than being carved out of it."""
    return bool(spec.get("heldout_source")) or spec.get("heldout_split", "train") == "test"


def reference_images(spec: dict, count: Optional[int] = None, cache_dir=None,
                     split: str = "train") -> tuple[np.ndarray, str, dict]:
    """FID reference images of an image entry: its whole training pool, or a seeded subset of `count`
    (sorted indices of numpy.random.default_rng(derive_seed(seed, 'fid-reference')).permutation: a stream
    of its own, so that the subset is not the held-out split, which the entry's seed carves out of the
    same pool), at the entry's resolution and channels. split 'heldout': the same from the entry's
    held-out split (a test split or heldout_source; an entry that carves its held-out images out of the
    training pool has no held-out reference apart from it).
    Returns (uint8 NHWC images, resize method used, provenance of the pool)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if split == "heldout" and not heldout_apart(spec):
        raise DatasetError(f"{_entry(spec)}: FID against the held-out split needs held-out images apart from the "
                           f"training pool: set heldout_split: test (known datasets) or heldout_source")
    raw = load_pool(spec, "train" if split == "train" else "test", cache_dir)
    images = raw.images
    if count is not None and count < len(images):
        rng = np.random.default_rng(derive_seed(spec.get("seed", 0), "fid-reference"))
        images = images[np.sort(rng.permutation(len(images))[:count])]
    images = to_channels(images, spec.get("channels") or images.shape[-1])
    try:
        images, how = to_resolution(images, spec.get("resolution") or images.shape[1], spec.get("resize", "auto"))
    except ValueError as e:
        raise DatasetError(f"{raw.source['description']}: {e} ({_entry(spec)}.resolution / .resize)") from e
    return images, how, raw.source
