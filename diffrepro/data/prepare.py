"""From a params.yaml dataset entry to a prepared dataset: the one function the prepare stage calls.

A spec is a `datasets.<entry>` mapping plus n_train, as diffrepro.pipeline.plan.dataset_identity builds it:
{kind: image|toy2d, name, resolution, n_heldout, seed, source, allow_download, n_train}.
"""
from __future__ import annotations

from typing import Optional

from .arrays import PreparedDataset, prepare_image_dataset, prepare_toy_dataset
from .cifar10 import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .sources import RawSplit

IMAGE_DATASETS = ("fashion_mnist", "cifar10")


def load_raw(name: str, split: str = "train", source=None, allow_download: bool = False,
             cache_dir=None) -> RawSplit:
    """Verified raw split of an image dataset by name; `source` is a folder (Fashion-MNIST) or the
    archive / its folder (CIFAR-10)."""
    if name == "fashion_mnist":
        return load_fashion_mnist(split, source=source, allow_download=allow_download, cache_dir=cache_dir)
    if name == "cifar10":
        return load_cifar10(split, archive=source, allow_download=allow_download, cache_dir=cache_dir)
    raise ValueError(f"unknown image dataset {name!r}; choose one of {IMAGE_DATASETS}")


def prepare_from_spec(spec: dict, cache_dir: Optional[str] = None) -> PreparedDataset:
    """Prepare the subset a spec describes. Held-out examples come from the training split (disjoint
    from the subset) or, with `heldout_split: test`, from the test split. The spec is stored in the
    manifest under 'spec'."""
    n_train, n_heldout, seed = spec.get("n_train"), spec.get("n_heldout", 0), spec.get("seed", 0)
    if spec["kind"] == "toy2d":
        ds = prepare_toy_dataset(spec["name"], n_train, n_heldout, seed)
    elif spec["kind"] == "image":
        raw = load_raw(spec["name"], "train", spec.get("source"), spec.get("allow_download", False), cache_dir)
        resolution = spec.get("resolution") or raw.images.shape[1]
        from_test = spec.get("heldout_split", "train") == "test"
        ds = prepare_image_dataset(raw.images, raw.labels, resolution, n_train, 0 if from_test else n_heldout, seed,
                                   name=spec["name"], source=raw.source)
        if from_test:  # held-out from the test split: lets the training subset be the whole training split
            test = load_raw(spec["name"], "test", spec.get("source"), spec.get("allow_download", False), cache_dir)
            ho = prepare_image_dataset(test.images, test.labels, resolution, n_heldout, 0, seed,
                                       name=spec["name"], source=test.source)
            ds.heldout, ds.heldout_labels = ho.train, ho.train_labels
            ds.manifest.update(n_heldout=len(ho.train), heldout_split="test", heldout_source=test.source)
    else:
        raise ValueError(f"unknown dataset kind {spec['kind']!r}; use 'image' or 'toy2d'")
    ds.manifest["spec"] = dict(spec)
    return ds
