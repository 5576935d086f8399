"""Datasets: Fashion-MNIST, CIFAR-10, 2D toys; compact uint8 arrays with a manifest.

Raw loaders (verified against hard-coded checksums) return RawSplit(images uint8 NHWC, labels int64,
source provenance); `prepare_*` draws a nested train subset and a disjoint held-out split;
`write_dataset` / `load_dataset` store and check the prepared folder (see arrays.py for its layout).
"""
from .arrays import (PreparedDataset, load_dataset, prepare_image_dataset, prepare_toy_dataset, split_indices,
                     to_resolution, write_dataset)
from .cifar10 import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .prepare import load_raw, prepare_from_spec
from .sources import DatasetError, RawSplit, download

__all__ = ["DatasetError", "PreparedDataset", "RawSplit", "download", "load_cifar10", "load_dataset",
           "load_fashion_mnist", "load_raw", "prepare_from_spec", "prepare_image_dataset", "prepare_toy_dataset",
           "split_indices", "to_resolution", "write_dataset"]
