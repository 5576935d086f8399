"""What a dataset entry of params.yaml is, wherever its files lie: a content fingerprint and its size.

Jobs carry `fingerprint(entry)` in their specs instead of the entry's `source:` path, so pointing
`source:` at a byte-identical copy elsewhere reruns nothing, and a changed file reruns everything built
on it.
  * Fashion-MNIST and CIFAR-10: their loaders accept only files whose checksums match the official
    ones (fashion_mnist.MD5_IDX, cifar10.MD5), so the content is known without reading it: the
    fingerprint names those checksums.
  * 2D toys are generated from their name and seed, which the spec holds: no fingerprint.
  * Any other source (a file or folder of data): the sha256 of its files' bytes, cached by
    (path, size, mtime) so that planning does not reread unchanged data.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from .sources import default_cache_dir

# examples per split of the datasets with a fixed size
SPLIT_SIZES = {"fashion_mnist": {"train": 60_000, "test": 10_000}, "cifar10": {"train": 50_000, "test": 10_000}}


def _official(name: str) -> Optional[str]:
    if name == "fashion_mnist":
        from .fashion_mnist import MD5_IDX
        table = ",".join(f"{k}={v}" for k, v in sorted(MD5_IDX.items()))
        return "fashion_mnist:idx-md5:" + hashlib.sha256(table.encode()).hexdigest()[:16]
    if name == "cifar10":
        from .cifar10 import MD5
        return f"cifar10:archive-md5:{MD5}"
    return None


def fingerprint(entry: dict) -> Optional[str]:
    """The content identity of a `datasets.<name>` entry (None: generated data, nothing to fingerprint)."""
    if entry.get("kind") == "toy2d":
        return None
    official = _official(entry.get("name", ""))
    if official is not None:
        return official
    if entry.get("source"):
        return "sha256:" + content_digest(entry["source"])
    return None


def available(entry: dict, reference: bool = False) -> Optional[int]:
    """How many examples a training subset (or, with reference=True, an FID reference) can draw from;
    None when unknown before the data is read (generated toys are unlimited)."""
    sizes = SPLIT_SIZES.get(entry.get("name", ""))
    if entry.get("kind") != "image" or sizes is None:
        return None
    if reference or entry.get("heldout_split", "train") == "test":
        return sizes["train"]
    return sizes["train"] - entry.get("n_heldout", 0)


# ------------------------------------------------------------------------------------ file contents
def _cache_file() -> Path:
    """$DIFFREPRO_CACHE/fingerprints.json (default ~/.cache/diffrepro), beside the dataset downloads."""
    return default_cache_dir("any").parent.parent / "fingerprints.json"


def _file_sha256(path: Path, cache: dict) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        cache[key] = h.hexdigest()
    return cache[key]


def content_digest(source, cache_path: Optional[Path] = None) -> str:
    """sha256 over the relative names and bytes of a file or of every file under a folder (hidden files
    skipped). Per-file hashes are cached by (path, size, mtime), so an unchanged source is not reread."""
    source = Path(source)
    if not source.exists():
        from .sources import DatasetError
        raise DatasetError(f"dataset source {source} does not exist")
    cache_path = Path(cache_path) if cache_path is not None else _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    before = len(cache)
    if source.is_file():
        files = [(source.name, source)]
    else:
        files = sorted((p.relative_to(source).as_posix(), p) for p in source.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    h = hashlib.sha256()
    for rel, path in files:
        h.update(f"{rel}\0{_file_sha256(path, cache)}\n".encode())
    if len(cache) != before:
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
            os.replace(tmp, cache_path)
        except OSError:       # a read-only home: hash again next time
            pass
    return h.hexdigest()
