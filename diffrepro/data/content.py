"""Dataset identity from content, not from paths.

Two hashes, for two jobs:

* `pixels_sha256(images)`, in the provenance of every prepared dataset: a hash of the loaded pixels
  that does not depend on file names or on the order the images come in (it hashes the sorted list of
  per-image digests), and changes when one pixel changes. A user dataset's images are also *put in*
  that content order before subsets are drawn (`content_order`), so renaming files or reordering an
  array gives the same subsets, and a folder of PNGs and an .npz of the same pixels prepare alike.

* `fingerprint(entry)`, for the planner: a cheap identity of a `datasets.<entry>`'s source files
  (their bytes; a folder's file *names* do not enter, its class subfolders do, as they set labels),
  so editing the data reruns what depends on it while moving it does not. File digests are cached by
  (path, size, mtime_ns) on disk, so planning a big folder a second time reads no pixels. Known
  datasets are identified by their official checksums, which the loaders enforce.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io import atomic_write_json
from .sources import DatasetError, sha256_file

FINGERPRINT_VERSION = 1


# --- pixels ------------------------------------------------------------------------------------------

def image_digests(images: np.ndarray) -> list[bytes]:
    """sha256 of each image's shape and raw uint8 bytes."""
    shape = "x".join(str(s) for s in images.shape[1:]).encode() + b"|"
    return [hashlib.sha256(shape + np.ascontiguousarray(img).tobytes()).digest() for img in images]


def content_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that sorts images by (pixel digest, label): an order set by content alone."""
    digests = image_digests(images)
    return np.array(sorted(range(len(images)), key=lambda i: (digests[i], int(labels[i]))), dtype=np.int64)


def pixels_sha256(images: np.ndarray, digests: list[bytes] | None = None) -> str:
    """Order-independent hash of a set of images (a multiset: duplicates count)."""
    digests = image_digests(images) if digests is None else digests
    h = hashlib.sha256(f"pixels-v1|{len(digests)}|".encode())
    for d in sorted(digests):
        h.update(d)
    return h.hexdigest()


def describe_content(images: np.ndarray, labels: np.ndarray) -> dict:
    """Provenance of loaded pixels: count, image shape, pixels_sha256, and a labels hash over the
    sorted (digest, label) pairs (relabelling an image changes it, renaming a file does not)."""
    digests = image_digests(images)
    h = hashlib.sha256(b"labels-v1|")
    for d, y in sorted(zip(digests, (int(v) for v in labels))):
        h.update(d + y.to_bytes(8, "little", signed=True))
    return {"n_images": int(len(images)), "image_shape": [int(s) for s in images.shape[1:]],
            "pixels_sha256": pixels_sha256(images, digests), "labels_sha256": h.hexdigest()}


# --- fingerprints of source files --------------------------------------------------------------------

def _cache_file(root: Path) -> Path:
    base = os.environ.get("DIFFREPRO_CACHE") or Path.home() / ".cache" / "diffrepro"
    return Path(base) / "fingerprints" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:20]}.json"


def _file_digests(root: Path, files: Iterable[Path]) -> dict[str, str]:
    """{path relative to root: sha256} for files under root, reusing cached digests whose (size,
    mtime_ns) still match; the cache is rewritten (atomically) only when something changed."""
    cache_path = _cache_file(root)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, fresh = {}, {}
    for path in files:
        st = path.stat()
        key = str(path.relative_to(root)) if path != root else path.name
        hit = cache.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            digest = hit[2]
        else:
            digest = sha256_file(path)
        fresh[key] = [st.st_size, st.st_mtime_ns, digest]
        out[key] = digest
    if fresh != cache:
        try:
            atomic_write_json(cache_path, fresh)
        except OSError:
            pass  # a read-only cache only costs time
    return out


def _source_files(fmt: str, source: Path) -> tuple[Path, list[Path]]:
    from .formats import folder_files, idx_files
    if fmt == "folder":
        return source, [p for p, _ in folder_files(source)]
    if fmt == "idx":
        files = idx_files(source, split=None)
        return files[0].parent, files
    if not source.is_file():
        raise DatasetError(f"{source}: no such file; set datasets.<entry>.source to your .npz or .npy file")
    return source.parent, [source]


def _fingerprint_source(fmt: str, source) -> list:
    from .formats import folder_class
    source = Path(source).expanduser().resolve()
    root, files = _source_files(fmt, source)
    digests = _file_digests(root, files)
    if fmt == "folder":  # class folder + content; file names do not enter
        return sorted([folder_class(source, p), digests[str(p.relative_to(root))]] for p in files)
    return sorted([p.name.removesuffix(".gz"), digests[str(p.relative_to(root))]] for p in files)


def fingerprint(entry: dict) -> str:
    """Content fingerprint (sha256 hex) of a `datasets.<entry>` mapping's data: the bytes of its source
    (and held-out source) files for your own data (`format:`), the official checksums for a known
    dataset (`name:`, which the loaders enforce), the generator's name for a 2D toy. Raises
    DatasetError naming the path when a source is missing."""
    from .cifar10 import MD5 as CIFAR10_MD5
    from .fashion_mnist import MD5_IDX
    if entry.get("kind") == "toy2d":
        ident = {"toy2d": entry["name"]}
    elif entry.get("format"):
        fmt = entry["format"]
        if not entry.get("source"):
            raise DatasetError(f"a dataset entry with format: {fmt} needs `source:` (the path of your data)")
        ident = {"format": fmt, "source": _fingerprint_source(fmt, entry["source"])}
        if entry.get("heldout_source"):
            ident["heldout_source"] = _fingerprint_source(fmt, entry["heldout_source"])
    elif entry.get("name") == "fashion_mnist":
        ident = {"name": "fashion_mnist", "md5_idx": MD5_IDX}
    elif entry.get("name") == "cifar10":
        ident = {"name": "cifar10", "md5": entry.get("md5") or CIFAR10_MD5}
    else:
        raise DatasetError(f"dataset entry {entry!r} names neither a known dataset (name:) nor a format "
                           "(format: folder | array | idx)")
    blob = json.dumps({"v": FINGERPRINT_VERSION, **ident}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
