"""Test fixtures for datasets: a small CIFAR-10 archive in the official python format."""
from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np

from diffrepro.data.sources import md5_file


def make_cifar_archive(path, n_per_batch: int = 20, seed: int = 0, batches=None) -> tuple[str, dict]:
    """Write a cifar-10-python.tar.gz look-alike: cifar-10-batches-py/data_batch_1..5 and test_batch,
    each a protocol-2 pickle of {b'data': uint8 (n, 3072) R,G,B planes, b'labels': [int], ...}.
    Returns (md5 of the archive, {member: (HWC uint8 images, int64 labels)})."""
    rng = np.random.default_rng(seed)
    batches = batches or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in batches:
            images = rng.integers(0, 256, (n_per_batch, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, 10, n_per_batch)
            rows = images.transpose(0, 3, 1, 2).reshape(n_per_batch, 3072)  # HWC -> CHW planes
            blob = pickle.dumps({b"batch_label": name.encode(), b"data": rows,
                                 b"labels": [int(v) for v in labels],
                                 b"filenames": [b"img%d.png" % i for i in range(n_per_batch)]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            expected[name] = (images, labels.astype(np.int64), rows)
    return md5_file(path), expected
