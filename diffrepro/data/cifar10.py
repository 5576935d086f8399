"""CIFAR-10 (Krizhevsky, 2009): 50,000 train / 10,000 test 32x32 RGB images, 10 classes, from the
official python archive.

The archive `cifar-10-python.tar.gz` holds `cifar-10-batches-py/data_batch_1..5` and `test_batch`,
each a pickle of a dict with b'data' (uint8 (n, 3072): the R, then G, then B plane of a 32x32 image,
row-major) and b'labels' (list of ints). The archive's md5 is checked before anything is unpickled
(pickle can run code: only a verified archive is ever opened); members are read straight from the
archive, nothing is extracted to disk.

Sources, first match wins: `archive` (the .tar.gz, or a folder holding it), the download cache,
and, only with allow_download=True, a verified download into that cache.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from .sources import DatasetError, RawSplit, default_cache_dir, download, how_to_fix, md5_file

NAME = "cifar10"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
MEMBERS = {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
           "test": ["cifar-10-batches-py/test_batch"]}


def _resolve_archive(archive, allow_download: bool, cache_dir, url: str, md5: str) -> tuple[Path, str]:
    if archive is not None:
        path = Path(archive)
        if path.is_dir():
            path = path / ARCHIVE_NAME
        if not path.is_file():
            raise DatasetError(f"CIFAR-10 archive {path} not found.\n{how_to_fix(NAME)}")
        return path, f"user archive {path}"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(NAME)
    path = cache / ARCHIVE_NAME
    if not path.is_file():
        if not allow_download:
            raise DatasetError(f"CIFAR-10 archive {path} not found and downloads are off.\n{how_to_fix(NAME)}")
        download(url, path, md5=md5)
    return path, f"download cache {path} (from {url})"


def decode_batch(batch: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One unpickled batch -> (uint8 (n, 32, 32, 3) HWC images, int64 (n,) labels)."""
    try:
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where}: not a CIFAR-10 batch (need keys b'data' and b'labels'): {e}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DatasetError(f"{where}: unexpected layout: data {data.dtype} {data.shape}, {len(labels)} labels")
    # channel-major CHW planes -> HWC
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar10(split: str, archive=None, allow_download: bool = False, cache_dir=None, md5: str = MD5,
                 url: str = URL) -> RawSplit:
    """Load and verify one split ('train' or 'test'). Returns RawSplit(images uint8 (N,32,32,3),
    labels int64 (N,), source provenance). `md5` is the archive's expected md5 (the official one by
    default). Raises DatasetError naming the archive on a missing file or failed check."""
    if split not in MEMBERS:
        raise ValueError(f"split must be one of {sorted(MEMBERS)}, got {split!r}")
    path, description = _resolve_archive(archive, allow_download, cache_dir, url, md5)
    actual = md5_file(path)
    if actual != md5:
        raise DatasetError(f"{path}: checksum mismatch: md5 {actual}, expected {md5}. The archive is corrupt, "
                           f"incomplete or not the official CIFAR-10 python version; delete it and fetch it "
                           f"again.\n{how_to_fix(NAME)}")
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in MEMBERS[split]:
                f = tar.extractfile(member)
                if f is None:
                    raise KeyError(member)
                x, y = decode_batch(pickle.load(f, encoding="bytes"), f"{path}:{member}")
                images.append(x)
                labels.append(y)
    except DatasetError:
        raise
    except (KeyError, tarfile.TarError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise DatasetError(f"{path}: cannot read CIFAR-10 batch ({type(e).__name__}: {e}).\n"
                           f"{how_to_fix(NAME)}") from e
    return RawSplit(np.concatenate(images), np.concatenate(labels),
                    {"description": f"CIFAR-10 {split} split, {description}",
                     "checksums": {path.name: {"file": path.name, "md5": actual, "verified_by": "archive md5"}}})
