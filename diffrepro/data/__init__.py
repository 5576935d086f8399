"""Datasets: Fashion-MNIST, CIFAR-10, your own images (folder, array, IDX), 2D toys; compact uint8
arrays with a manifest.

Raw loaders (known datasets verified against hard-coded checksums; your own data checked for what can
be checked) return RawSplit(images uint8 NHWC, labels int64, source provenance with a hash of the
loaded pixels); `prepare_*` draws a nested train subset and a disjoint held-out split;
`write_dataset` / `load_dataset` store and check the prepared folder (see arrays.py for its layout);
`fingerprint(entry)` identifies an entry's data by content and `available(entry)` counts it (identity.py).
"""
from .arrays import (PreparedDataset, load_dataset, prepare_image_dataset, prepare_toy_dataset, split_indices,
                     write_dataset)
from .cifar10 import load_cifar10
from .content import pixels_sha256
from .fashion_mnist import load_fashion_mnist
from .formats import FORMATS, load_own
from .identity import available, fingerprint
from .pixels import to_channels, to_resolution
from .prepare import load_pool, load_raw, prepare_from_spec, reference_images
from .sources import DatasetError, RawSplit, download

__all__ = ["DatasetError", "FORMATS", "PreparedDataset", "RawSplit", "available", "download", "fingerprint", "load_cifar10",
           "load_dataset", "load_fashion_mnist", "load_own", "load_pool", "load_raw", "pixels_sha256",
           "prepare_from_spec", "prepare_image_dataset", "prepare_toy_dataset", "reference_images",
           "split_indices", "to_channels", "to_resolution", "write_dataset"]
