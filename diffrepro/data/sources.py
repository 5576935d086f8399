"""Where raw datasets come from: checksums, verified downloads, and errors that say how to fix them.

Every raw file is checked against a hard-coded md5 before it is used; a download goes to a temporary
file next to its destination, is verified, and only then renamed into place, so a cache folder never
holds a partial or unverified file.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from ..io import atomic_path


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt, or fails its checksum. The message names the file and
    says what to do about it."""


class RawSplit(NamedTuple):
    """One split of a raw dataset, as loaded and verified from its source.

    images: uint8 (N, H, W, C); labels: int64 (N,); source: provenance for the manifest,
    {"description": str, "checksums": {file name: {kind: md5}}}.
    """
    images: np.ndarray
    labels: np.ndarray
    source: dict


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _file_digest(path, algo: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo, usedforsecurity=False) if algo == "md5" else hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5_file(path) -> str:
    return _file_digest(path, "md5")


def sha256_file(path) -> str:
    return _file_digest(path, "sha256")


def default_cache_dir(name: str) -> Path:
    """Download cache for dataset `name`: $DIFFREPRO_CACHE/datasets/<name>, default ~/.cache/diffrepro."""
    root = os.environ.get("DIFFREPRO_CACHE") or Path.home() / ".cache" / "diffrepro"
    return Path(root) / "datasets" / name


def how_to_fix(name: str, extra: str = "") -> str:
    """The standard advice appended to every DatasetError for dataset `name`."""
    lines = [f"To fix: {extra}" if extra else "To fix, one of:"]
    if name == "fashion_mnist":
        lines.append("  - install Debian's copy: `sudo apt install dataset-fashion-mnist` "
                     "(files in /usr/share/datasets/fashion-mnist/);")
    lines += [f"  - in params.yaml, set `source:` of the dataset entry with `name: {name}` "
              f"(datasets.<entry>.source) to a folder or archive holding the original files;",
              "  - or allow a verified download: `allow_download: true` in that entry "
              "(loader argument allow_download=True)."]
    return "\n".join(lines)


def download(url: str, dest, md5: Optional[str] = None,
             check: Optional[Callable[[Path], None]] = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` atomically: write a temporary sibling, verify it (md5 and/or `check`,
    which raises DatasetError), then rename. On any failure nothing is left at `dest`.
    Any scheme urllib handles works, file:// included (the tests use it; no network there)."""
    dest = Path(dest)
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                _copy_with_progress(response, f, dest.name)
            if md5 is not None:
                actual = md5_file(tmp)
                if actual != md5:
                    raise DatasetError(
                        f"downloaded file {dest.name} from {url} has md5 {actual}, expected {md5}; "
                        "it was not kept. The server copy may have changed or the transfer was corrupted: "
                        "retry, or fetch the file by hand and pass it as the dataset source.")
            if check is not None:
                try:
                    check(tmp)
                except DatasetError as e:
                    raise DatasetError(f"download of {url} failed verification and was not kept: {e}") from e
    except OSError as e:  # urllib.error.URLError is an OSError; DatasetError is not, and passes through
        raise DatasetError(f"could not download {url} to {dest}: {e}. Check the network, or fetch the "
                           "file by hand and pass it as the dataset source.") from e
    return dest


def _copy_with_progress(response, f, label: str):
    from tqdm.auto import tqdm
    total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
    with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, desc=label,
              disable=None, leave=False) as bar:  # disable=None: silent when not a terminal
        while block := response.read(1 << 20):
            f.write(block)
            bar.update(len(block))
