"""Your own images, in three formats (`datasets.<entry>.format`):

  folder   PNG or JPEG files (also BMP, WebP, TIFF) in one folder, or in class subfolders, one per class
           (labels = the subfolders' sorted names, numbered from 0); hidden files and other files are
           skipped. 8-bit images only; gray modes load as 1 channel when every image is gray, else
           everything loads as RGB (gray replicated; alpha is dropped, not blended).
  array    a .npy array, or an .npz holding one array or the arrays `images` (and optional `labels`):
           (N, H, W) or (N, H, W, C) with C = 1 or 3, uint8 (any integer type whose values lie in
           0..255 is taken as is). Channels-first and float arrays are refused with the line that
           converts them.
  idx      MNIST-format IDX files (gzipped or not) of any size: `source` is an images file (labels:
           the same name with images -> labels, idx3 -> idx1, if present) or a folder holding
           train-images-idx3-ubyte (and t10k-images-idx3-ubyte, the held-out split for
           `heldout_split: test`), with their labels files.

Every reader checks what can be checked (readable, one image size, enough images, labels that match)
and raises DatasetError naming the file and saying what to do. Images come back in *content order*
(sorted by pixel digest, then label; see content.py), so neither file names nor array order change
what a seeded subset holds.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from .content import content_order, describe_content
from .sources import DatasetError, RawSplit

FORMATS = ("folder", "array", "idx")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
GRAY_MODES = {"1", "L", "LA", "La"}
NOT_8_BIT = ("I", "F")          # PIL modes I, I;16*, F: 16/32-bit or float pixels
ORDER = "content: sorted by per-image pixel digest, then label"


def _fix(entry_key: str = "source") -> str:
    return f"(datasets.<entry>.{entry_key} in params.yaml)"


# --- folder ------------------------------------------------------------------------------------------

def folder_class(root: Path, path: Path) -> str:
    """The class a file belongs to: its first-level subfolder under root ('' for files at the top)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def folder_files(root) -> list[tuple[Path, str]]:
    """(file, class) for every image file under root, sorted by relative path; hidden entries skipped."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. Point `source` {_fix()} at the folder holding your images "
                           "(format: folder), or use format: array / idx for a file.")
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            files.append((path, folder_class(root, path)))
    if not files:
        raise DatasetError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, also in "
                           "subfolders). Put your PNG/JPEG files there, or fix `source` " + _fix() + ".")
    top = [p for p, c in files if c == ""]
    sub = [p for p, c in files if c != ""]
    if top and sub:
        raise DatasetError(f"{root}: has images both directly inside it (e.g. {top[0].name}) and in subfolders "
                           f"(e.g. {sub[0].relative_to(root)}). Subfolders are read as classes: put every image in "
                           "a class subfolder, or all of them at the top.")
    return files


def _open_image(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot be read as an image ({type(e).__name__}: {e}). Remove or replace "
                           "the file.") from e
    if img.mode.startswith(NOT_8_BIT):
        raise DatasetError(f"{path}: {img.mode} image ({'16/32-bit integer' if img.mode.startswith('I') else 'float'} "
                           "pixels); only 8-bit images are read. Convert it to 8-bit PNG (e.g. with PIL: "
                           "Image.open(p).convert('L') or 'RGB' after scaling), or remove it.")
    return img


def read_folder(root) -> tuple[np.ndarray, np.ndarray, dict]:
    """uint8 (N, H, W, C) images, int64 labels and details of an image folder, in file order."""
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    files = folder_files(root)
    classes = sorted({c for _, c in files if c})
    # one pass for modes and sizes (headers only), then decode
    sizes, gray = {}, True
    for path, _ in files:
        try:
            with Image.open(path) as img:
                sizes.setdefault(img.size, path)
                gray &= img.mode in GRAY_MODES
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise DatasetError(f"{path}: cannot be read as an image ({type(e).__name__}: {e}). Remove or replace "
                               "the file.") from e
        if len(sizes) > 1:
            (s1, p1), (s2, p2) = list(sizes.items())[:2]
            raise DatasetError(f"{root}: images of different sizes: {p1.relative_to(root)} is {s1[0]}x{s1[1]}, "
                               f"{p2.relative_to(root)} is {s2[0]}x{s2[1]} (width x height). All images of a "
                               "dataset must have one size: resize or crop them beforehand.")
    (w, h), = sizes
    mode, c = ("L", 1) if gray else ("RGB", 3)
    images = np.empty((len(files), h, w, c), np.uint8)
    for i, (path, _) in enumerate(tqdm(files, desc=f"reading {root.name}", unit="img", disable=None, leave=False)):
        images[i] = np.asarray(_open_image(path).convert(mode)).reshape(h, w, c)
    labels = np.array([classes.index(cl) if cl else 0 for _, cl in files], np.int64)
    return images, labels, {"classes": classes, "n_files": len(files)}


# --- arrays ------------------------------------------------------------------------------------------

def _as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    """Check an (N, H, W[, C]) image array; return it as uint8 NHWC, or raise saying how to fix it."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DatasetError(f"{where}: array of shape {x.shape}; images must be (N, H, W) or (N, H, W, C)")
    n, h, w, c = x.shape
    if c not in (1, 3):
        if x.shape[1] in (1, 3) and c > 4:
            raise DatasetError(f"{where}: shape {x.shape} looks channels-first (N, C, H, W); images must be "
                               "channels-last: save x.transpose(0, 2, 3, 1) instead")
        hint = "; drop the alpha channel: x[..., :3]" if c == 4 else ""
        raise DatasetError(f"{where}: {c} channels in shape {x.shape}; images must have 1 or 3 channels "
                           f"(N, H, W, C){hint}")
    if n == 0:
        raise DatasetError(f"{where}: holds no images (shape {x.shape})")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo >= 0 and hi <= 255:
            return x.astype(np.uint8)
        raise DatasetError(f"{where}: {x.dtype} values in [{lo}, {hi}]; images must be uint8 in [0, 255]")
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        how = ("np.round((x + 1) * 127.5).clip(0, 255).astype(np.uint8)" if lo < 0
               else "np.round(x * 255).clip(0, 255).astype(np.uint8)" if hi <= 1
               else "np.round(x).clip(0, 255).astype(np.uint8)")
        raise DatasetError(f"{where}: {x.dtype} values in [{lo:.3g}, {hi:.3g}]; images must be uint8 in "
                           f"[0, 255]. Convert them explicitly, e.g. {how}, and save that array")
    raise DatasetError(f"{where}: dtype {x.dtype}; images must be uint8 in [0, 255]")


def _labels(y, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: labels must be integers of shape ({n},), one per image; got {y.dtype} "
                           f"{y.shape}")
    return y.astype(np.int64)


def read_array(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Images and labels from a .npy or .npz file (see the module docstring for the keys)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such file. Set `source` {_fix()} to your .npz or .npy file.")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot be read as .npy/.npz without pickle ({type(e).__name__}: {e}). Save it "
                           "with numpy.save / numpy.savez of plain arrays.") from e
    labels = None
    if isinstance(data, np.ndarray):
        images = data
    else:
        with data:
            keys = list(data.keys())
            if "images" in keys:
                images = data["images"]
                labels = data["labels"] if "labels" in keys else None
            elif len(keys) == 1:
                images = data[keys[0]]
            else:
                raise DatasetError(f"{path}: holds arrays {keys}; name the image array 'images' (and the labels "
                                   "'labels'), e.g. numpy.savez(path, images=x, labels=y)")
    images = _as_uint8_images(images, str(path))
    labels = np.zeros(len(images), np.int64) if labels is None else _labels(labels, len(images), f"{path}:labels")
    return images, labels, {}


# --- IDX ---------------------------------------------------------------------------------------------

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx_any(data: bytes, path) -> np.ndarray:
    """Parse an uncompressed IDX file of any type and rank (big-endian magic 0 0 type rank, rank uint32
    sizes, then the values)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (its first bytes are not 00 00 <type> <rank>)")
    dtype, ndim = IDX_TYPES.get(data[2]), data[3]
    if dtype is None:
        raise DatasetError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX file ({len(data)} bytes, shorter than its header)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise DatasetError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has {len(data)} "
                           f"bytes ({'truncated' if len(data) < expected else 'trailing data'}); copy it again")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def _read_idx_file(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt or truncated gzip file ({e}); copy it again") from e
    return parse_idx_any(raw, path)


def _find(folder: Path, name: str) -> Optional[Path]:
    for p in (folder / name, folder / f"{name}.gz"):
        if p.is_file():
            return p
    return None


def _labels_file_for(images: Path) -> Optional[Path]:
    name = images.name.removesuffix(".gz").replace("images", "labels").replace("idx3", "idx1").replace("idx4", "idx1")
    return None if name == images.name.removesuffix(".gz") else _find(images.parent, name)


def idx_files(source, split: str = "train") -> list[Optional[Path]]:
    """[images, labels or None] of an IDX source for one split ('train' or 'test'); for split None,
    every file of both splits that exists (what the fingerprint hashes)."""
    source = Path(source).expanduser()
    if split is None:
        files = idx_files(source, "train")
        if source.is_dir() and _find(source, "t10k-images-idx3-ubyte"):
            files += idx_files(source, "test")
        return [f for f in files if f is not None]
    if source.is_file():
        if split != "train":
            raise DatasetError(f"{source}: a single IDX file has no test split; name a held-out file with "
                               "`heldout_source:`, or let n_heldout images be carved out (heldout_split: train)")
        return [source, _labels_file_for(source)]
    if not source.is_dir():
        raise DatasetError(f"{source}: no such file or folder. Set `source` {_fix()} to an IDX images file or a "
                           "folder holding train-images-idx3-ubyte[.gz].")
    name = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}[split]
    images = _find(source, name)
    if images is None and split == "train":
        candidates = sorted(p for p in source.iterdir() if "images" in p.name and "idx" in p.name)
        images = candidates[0] if len(candidates) == 1 else None
    if images is None:
        raise DatasetError(f"{source}: no {name}[.gz] found. Put the MNIST-format files there, or point `source` "
                           f"{_fix()} at the images file itself.")
    return [images, _labels_file_for(images)]


def read_idx(source, split: str = "train") -> tuple[np.ndarray, np.ndarray, dict]:
    images_path, labels_path = idx_files(source, split)
    images = _read_idx_file(images_path)
    if images.dtype != np.uint8:
        raise DatasetError(f"{images_path}: IDX values are {images.dtype.name}; images must be unsigned bytes "
                           "(type 0x08)")
    images = _as_uint8_images(images, str(images_path))
    if labels_path is None:
        labels = np.zeros(len(images), np.int64)
    else:
        labels = _labels(_read_idx_file(labels_path), len(images), str(labels_path))
    return images, labels, {"files": [str(images_path)] + ([str(labels_path)] if labels_path else [])}


# --- one entry point ---------------------------------------------------------------------------------

def load_own(fmt: str, source, split: str = "train") -> RawSplit:
    """Read a user dataset in `fmt` from `source`, in content order, with provenance of its pixels."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}: use one of {', '.join(FORMATS)}")
    if source is None:
        raise DatasetError(f"a dataset with format: {fmt} needs `source` {_fix()}: the path of your data")
    if fmt == "folder":
        images, labels, extra = read_folder(source)
    elif fmt == "array":
        images, labels, extra = read_array(source)
    else:
        images, labels, extra = read_idx(source, split)
    order = content_order(images, labels)
    images, labels = images[order], labels[order]
    content = describe_content(images, labels)
    n, h, w, c = images.shape
    return RawSplit(images, labels, {
        "description": f"{fmt} {Path(source).expanduser()} ({n} images of {h}x{w}x{c}"
                       + (f", {len(extra['classes'])} classes" if extra.get("classes") else "") + ")",
        "checksums": {}, "content": content, "order": ORDER, **extra})
