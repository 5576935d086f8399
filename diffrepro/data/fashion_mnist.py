"""Fashion-MNIST (Xiao et al., 2017): 60,000 train / 10,000 test 28x28 grayscale images, 10 classes,
stored as four IDX files (gzipped or not).

Sources, first match wins: a folder the caller names (`source`), Debian's package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), the download cache, and, only with
allow_download=True, a verified download from upstream into that cache.

Checksums: Debian recompressed the .gz files, so upstream's .gz md5s (the ones torchvision checks)
do not match them. We therefore verify the md5 of the *decompressed* IDX bytes, which is the same for
every copy; a file is also accepted when its .gz md5 equals upstream's.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from .sources import DatasetError, RawSplit, default_cache_dir, download, how_to_fix, md5_bytes

NAME = "fashion_mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SPLIT_SIZE = {"train": 60_000, "test": 10_000}
# md5 of the decompressed IDX bytes (upstream's and Debian's .gz files decompress to these).
MD5_IDX = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# md5 of upstream's .gz files (torchvision.datasets.FashionMNIST.resources).
MD5_GZ = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # uint8 data (type code 0x08), 3 or 1 dimensions


def parse_idx(data: bytes, path, ndim: int) -> np.ndarray:
    """Parse an uncompressed IDX file of uint8 data: big-endian magic, `ndim` big-endian uint32
    sizes, then the bytes. Raises DatasetError on a wrong magic or a length mismatch."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its header)")
    magic = int.from_bytes(data[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise DatasetError(f"{path}: wrong IDX magic 0x{magic:08x}, expected 0x{IDX_MAGIC[ndim]:08x} "
                           f"(uint8, {ndim}-d); this is not the expected {'image' if ndim == 3 else 'label'} file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DatasetError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has "
                           f"{len(data)} bytes ({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Optional[Path]:
    for path in (folder / name, folder / f"{name}.gz"):  # uncompressed first: faster
        if path.is_file():
            return path
    return None


def read_verified(path, name: str) -> tuple[np.ndarray, dict]:
    """Read, parse and checksum one Fashion-MNIST IDX file (.gz or not); return (array, checksums)."""
    path = Path(path)
    raw = path.read_bytes()
    checks = {"file": path.name}
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        checks["md5_gz"] = md5_bytes(raw)
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, bad header
            raise DatasetError(f"{path}: corrupt or truncated gzip file ({e}). Delete it and copy or "
                               f"install it again.\n{how_to_fix(NAME)}") from e
    checks["md5_idx"] = md5_bytes(raw)
    try:
        array = parse_idx(raw, path, ndim=3 if "images" in name else 1)
    except DatasetError as e:
        raise DatasetError(f"{e}. Delete it and copy or install it again.\n{how_to_fix(NAME)}") from e
    if checks.get("md5_gz") == MD5_GZ[name]:
        checks["verified_by"] = "upstream .gz md5"
    elif checks["md5_idx"] == MD5_IDX[name]:
        checks["verified_by"] = "decompressed IDX md5"
    else:
        raise DatasetError(
            f"{path}: checksum mismatch: decompressed md5 {checks['md5_idx']}, expected {MD5_IDX[name]}"
            + (f" (and .gz md5 {checks['md5_gz']} is not upstream's {MD5_GZ[name]})" if "md5_gz" in checks else "")
            + f". The file is corrupt or not the official {name}. Delete it and copy or install it again."
            f"\n{how_to_fix(NAME)}")
    return array, checks


def _resolve_folder(split: str, source, allow_download: bool, cache_dir, url: str) -> tuple[Path, str]:
    names = FILES[split]
    if source is not None:
        folder = Path(source)
        if not folder.is_dir():
            raise DatasetError(f"Fashion-MNIST source {folder} is not a folder.\n{how_to_fix(NAME)}")
        return folder, f"user folder {folder}"
    if DEBIAN_DIR.is_dir():
        return DEBIAN_DIR, f"Debian package dataset-fashion-mnist ({DEBIAN_DIR})"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(NAME)
    missing = [n for n in names if _find(cache, n) is None]
    if missing and not allow_download:
        raise DatasetError(f"Fashion-MNIST not found: {DEBIAN_DIR} does not exist and the download cache "
                           f"{cache} lacks {', '.join(missing)}; downloads are off.\n{how_to_fix(NAME)}")
    for name in missing:
        download(url + f"{name}.gz", cache / f"{name}.gz", check=lambda tmp, n=name: read_verified(tmp, n))
    return cache, f"download cache {cache} (from {url})"


def load_fashion_mnist(split: str, source=None, allow_download: bool = False, cache_dir=None,
                       url: str = URL) -> RawSplit:
    """Load and verify one split ('train' or 'test'). Returns RawSplit(images uint8 (N,28,28,1),
    labels int64 (N,), source provenance). Raises DatasetError naming the file when something is
    missing or fails a check."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}")
    folder, description = _resolve_folder(split, source, allow_download, cache_dir, url)
    arrays, checksums = [], {}
    for name in FILES[split]:
        path = _find(folder, name)
        if path is None:
            raise DatasetError(f"Fashion-MNIST file {name} (or {name}.gz) not found in {folder}.\n"
                               f"{how_to_fix(NAME)}")
        array, checks = read_verified(path, name)
        arrays.append(array)
        checksums[name] = checks
    images, labels = arrays
    if len(images) != SPLIT_SIZE[split] or len(labels) != len(images):  # unreachable once md5s match
        raise DatasetError(f"{folder}: {len(images)} images and {len(labels)} labels for split {split!r}")
    return RawSplit(images[..., None].copy(), labels.astype(np.int64),
                    {"description": f"Fashion-MNIST {split} split, {description}", "checksums": checksums})
