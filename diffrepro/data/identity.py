"""What a dataset entry of params.yaml is, wherever its files lie: a content fingerprint and its size.

Jobs carry `fingerprint(entry)` instead of the entry's paths (`source`, `heldout_source`), so pointing an
entry at a byte-identical copy elsewhere reruns nothing, and a changed file reruns everything built on it.
  * Fashion-MNIST and CIFAR-10: their loaders accept only files whose checksums match the official ones
    (fashion_mnist.MD5_IDX, cifar10.MD5, or the entry's `md5` for a re-packed CIFAR-10 archive), so the
    content is known without reading it: the fingerprint names those checksums.
  * 2D toys are generated from their name and seed, which the spec holds: no fingerprint (None).
  * Your own data (`format:`): the sha256 of the source (and held-out source) files' bytes, cached by
    (path, size, mtime_ns) so that planning does not reread unchanged data. For a folder, a file's name
    does not enter (images are read in content order, see content.py), its class subfolder does (it
    sets the label); re-encoding an image changes the fingerprint even if its pixels do not.
`available(entry)` counts what a training subset can draw from, reading only file listings and headers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..io import atomic_write_json
from .sources import DatasetError, sha256_file

FINGERPRINT_VERSION = 1
# examples per split of the datasets with a fixed size
SPLIT_SIZES = {"fashion_mnist": {"train": 60_000, "test": 10_000}, "cifar10": {"train": 50_000, "test": 10_000}}


# --- file digests, cached --------------------------------------------------------------------------------

def _cache_file(root: Path) -> Path:
    base = os.environ.get("DIFFREPRO_CACHE") or Path.home() / ".cache" / "diffrepro"
    return Path(base) / "fingerprints" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:20]}.json"


def _file_digests(root: Path, files: Iterable[Path]) -> dict[str, str]:
    """{path relative to root: sha256} for files under root, reusing cached digests whose (size,
    mtime_ns) still match; the cache (one JSON per root) is rewritten atomically only when it changed."""
    cache_path = _cache_file(root)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, fresh = {}, {}
    for path in files:
        st = path.stat()
        key = str(path.relative_to(root))
        hit = cache.get(key)
        digest = hit[2] if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns else sha256_file(path)
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


def _source_identity(fmt: str, source) -> list:
    from .formats import folder_class
    source = Path(source).expanduser().resolve()
    root, files = _source_files(fmt, source)
    digests = _file_digests(root, files)
    if fmt == "folder":  # class subfolder + content; file names do not enter
        return sorted([folder_class(source, p), digests[str(p.relative_to(root))]] for p in files)
    return sorted([p.name.removesuffix(".gz"), digests[str(p.relative_to(root))]] for p in files)


def fingerprint(entry: dict) -> Optional[str]:
    """The content identity of a `datasets.<entry>` mapping (None: generated data, nothing to fingerprint).
    Raises DatasetError naming the path when your data's source is missing."""
    if entry.get("kind") == "toy2d":
        return None
    fmt = entry.get("format")
    if fmt:
        if not entry.get("source"):
            raise DatasetError(f"a dataset entry with format: {fmt} needs `source:` (the path of your data)")
        ident = {"v": FINGERPRINT_VERSION, "format": fmt, "source": _source_identity(fmt, entry["source"])}
        if entry.get("heldout_source"):
            ident["heldout_source"] = _source_identity(fmt, entry["heldout_source"])
        blob = json.dumps(ident, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
    if entry.get("name") == "fashion_mnist":
        from .fashion_mnist import MD5_IDX
        table = ",".join(f"{k}={v}" for k, v in sorted(MD5_IDX.items()))
        return "fashion_mnist:idx-md5:" + hashlib.sha256(table.encode()).hexdigest()[:16]
    if entry.get("name") == "cifar10":
        from .cifar10 import MD5
        return f"cifar10:archive-md5:{entry.get('md5') or MD5}"
    raise DatasetError(f"dataset entry {entry!r} names neither a known dataset (name: fashion_mnist | cifar10) nor "
                       "your own data (format: folder | array | idx, with source:)")


# --- sizes -----------------------------------------------------------------------------------------------

def _npy_len(f) -> int:
    version = np.lib.format.read_magic(f)
    shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                   else np.lib.format.read_array_header_2_0(f))
    return int(shape[0]) if shape else 0


def count_images(fmt: str, source, split: str = "train") -> int:
    """How many images your data holds, from file listings and headers only (nothing is decoded)."""
    from .formats import folder_files, idx_files
    source = Path(source).expanduser()
    if fmt == "folder":
        return len(folder_files(source))
    if fmt == "idx":
        path = idx_files(source, split)[0]
        opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            head = f.read(8)
        return int.from_bytes(head[4:8], "big")
    if not source.is_file():
        raise DatasetError(f"{source}: no such file")
    try:
        if source.suffix == ".npz" or zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                names = [n for n in z.namelist() if n.endswith(".npy")]
                member = "images.npy" if "images.npy" in names else names[0] if len(names) == 1 else None
                if member is None:
                    raise DatasetError(f"{source}: holds arrays {[n[:-4] for n in names]}; name the image array "
                                       "'images'")
                with z.open(member) as f:
                    return _npy_len(f)
        with open(source, "rb") as f:
            return _npy_len(f)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{source}: cannot be read as .npy/.npz ({e})") from e


def available(entry: dict, reference: bool = False) -> Optional[int]:
    """How many examples a training subset (or, with reference=True, an FID reference) can draw from;
    None when unknown before the data is read (generated toys are unlimited; an unreadable source is
    reported by the prepare stage, with the file and the fix)."""
    if entry.get("kind") != "image":
        return None
    given = entry.get("heldout_split", "train") == "test" or bool(entry.get("heldout_source"))
    if entry.get("format"):
        try:
            pool = count_images(entry["format"], entry["source"])
        except (DatasetError, KeyError, IndexError, OSError):
            return None
    else:
        sizes = SPLIT_SIZES.get(entry.get("name", ""))
        if sizes is None or entry.get("md5"):   # a re-packed archive: its size is not the official one
            return None
        pool = sizes["train"]
    return pool if reference or given else pool - entry.get("n_heldout", 0)
