"""Atomic writes: every artifact is written to a temporary file in the same folder and renamed,
so a crash or kill never leaves a half-written output behind. A SIGKILL between writing and renaming
can leave the hidden temporary itself; `remove_stale_temporaries` clears those when a job restarts."""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to `path`; rename it onto `path` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# what atomic_path's mkstemp creates: .<name>.<8 random characters><suffix>
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?$")


def remove_stale_temporaries(folder) -> list:
    """Delete temporaries that a killed writer left under `folder` (only one job may write there)."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.rglob(".*"):
            if p.is_file() and _TEMPORARY.match(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def atomic_torch_save(obj, path):
    import torch
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def atomic_save_npz(path, **arrays):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def atomic_write_parquet(path, df):
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def atomic_savefig(path, fig, **kw):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kw)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o)}")


@contextlib.contextmanager
def replace_folder(path):
    """Yield an empty temporary folder next to `path`; on success it replaces `path` (an old folder there is
    moved aside, then deleted), on error it is deleted. Readers never see a half-written folder."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
