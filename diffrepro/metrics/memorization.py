"""Memorization of training images (Gu et al. 2023, "On Memorization in Diffusion Models", official code).

A generated sample x is *memorized* when its nearest training image is much closer than the second:

    d1 / d2 < 1/3,   d_i = ||x - y_(i)||_2 / sqrt(C*H*W)   over uint8 pixel values (as float)

and the memorization ratio of a model is the fraction of its samples that are memorized.

Exact duplicates inside the training set: the criterion asks whether the nearest training image is much
closer than *any other* training image. When the training set holds the same image twice, its two copies
would be the two nearest neighbours of a sample near them (d1 = d2), and an exact copy would score
0/0 while the same image +-1 would score 1.0 (not memorized). We therefore compare against the *distinct*
training images: d2 is the distance to the second nearest distinct image (the reference set is
deduplicated by exact equality before the search; `nearest` reports the lowest index of the nearest
image's copies). Both an exact copy and a near copy of a duplicated image are memorized, as they are for
an image that occurs once. Near-duplicates that differ in any value stay distinct.

Inputs (checked by `check_inputs`, which raises a one-line ValueError naming the fix):
  - samples and training set of the same kind: both uint8 images (Gu et al.: distances over [0, 255]
    pixel values), or both float (e.g. both in [-1, 1], or 2-D toy points). Mixed kinds are refused, and
    so are float images whose ranges disagree plainly ([0, 255] against [-1, 1] or [0, 1]: one reaches
    beyond PIXEL_SCALE_LIMIT, the other does not; unclipped samples of an undertrained model reach about
    +-3 and still count as the [-1, 1] convention); convert
    explicitly: samples -> uint8 with diffrepro.samplers.to_uint8 (EDM: x * 127.5 + 128, clamped,
    truncated), or uint8 -> [-1, 1] with x / 127.5 - 1. The ratio is the same in either scale, up to the
    uint8 rounding.
  - the same layout: the per-item shapes must be equal once axes of size 1 are dropped (so gray (H, W),
    (H, W, 1) and (1, H, W) agree, while (3, H, W) against (H, W, 3) with matching flattened sizes is
    refused: transpose one side).
  - non-empty sets, and at least two distinct training items.

Nearest neighbours are exact. A fast pass forms squared distances as ||a||^2 + ||b||^2 - 2 a.b with one
float32-accumulated GEMM per (query chunk x reference chunk) block and keeps the k + margin best
candidates per query on the device; the candidates are then re-ranked with direct differences
sum((a - b)^2) in float64, which is exact for uint8 data (integer squares, sums < 2^53). A bound on the
fast pass's rounding error proves that no reference point outside the candidates can be among the k
nearest; a query for which the bound cannot prove it is rescanned exactly (see `nearest_neighbours`).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["nearest_neighbours", "memorization_scores", "MemorizationScores", "check_inputs", "distinct_items",
           "fast_pass_error_bound", "plot_memorized_pairs"]

GU_THRESHOLD = 1.0 / 3.0
_U = 2.0 ** -23  # float32 unit roundoff doubled: also covers directed rounding in tensor-core accumulators


def fast_pass_error_bound(dim: int) -> float:
    """c(D) with |f - d^2| <= c(D) (||a||^2 + ||b||^2): fast-pass error bound, norms of the centred inputs.

    With u the unit roundoff of the float32 accumulator and products exact (integer or float32 inputs):
      - a.b summed in any order errs by <= gamma_D sum|a_i b_i| <= gamma_D (||a||^2 + ||b||^2) / 2,
        gamma_D = D u / (1 - D u) (Higham, Accuracy and Stability of Numerical Algorithms, eq. 3.5),
        so 2 a.b errs by <= gamma_D (||a||^2 + ||b||^2);
      - rounding ||b||^2 to float32 and the GEMM epilogue ||b||^2 - 2 a.b: <= 4u (||a||^2 + ||b||^2);
      - float (non-integer) inputs rounded to float32: <= 4u (||a||^2 + ||b||^2) more.
    u is taken as 2^-23 (twice round-to-nearest's, to cover truncating tensor-core accumulators) and the sum
    doubled for safety: c(D) = 2 (gamma_D + 8u). Assumes float32 (not reduced) accumulation, which
    `nearest_neighbours` pins. D = 3072: c = 7.4e-4; the largest error observed on an H100 was 4.6e-8.
    """
    if dim * _U >= 0.5:
        raise ValueError(f"error bound undefined for D = {dim} values per item (needs D < 2^22)")
    return 2.0 * (dim * _U / (1.0 - dim * _U) + 8 * _U)


# ----------------------------------------------------------------------------------------------------
# inputs

def _as_rows(x) -> torch.Tensor:
    """(N, ...) array or tensor -> (N, D) tensor on the CPU or its own device, dtype kept."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        with warnings.catch_warnings():  # read-only arrays (np.frombuffer) are never written to here
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim < 2:
        raise ValueError(f"expected a batch of shape (N, ...), got shape {tuple(t.shape)}")
    return t.detach().reshape(t.shape[0], -1)


@contextlib.contextmanager
def _fp32_matmul(device: torch.device, allow_tf32: bool):
    """Pin float32 matmul precision for the block, then restore it: TF32 only where allowed (exact inputs),
    never bf16 (a global `torch.set_float32_matmul_precision('medium')` would break the error bound)."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    want = "tf32" if (allow_tf32 and device.type == "cuda") else "ieee"
    try:
        prev = backend.fp32_precision
        backend.fp32_precision = want
        restore = lambda: setattr(backend, "fp32_precision", prev)  # noqa: E731
    except (AttributeError, RuntimeError):  # older torch, or the legacy allow_tf32 API already in use
        restore = lambda: None  # noqa: E731
        if device.type == "cuda":
            prev_legacy = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = want == "tf32"
            restore = lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", prev_legacy)  # noqa: E731
    try:
        yield
    finally:
        restore()


def _gemm_mode(device: torch.device, integer: bool) -> str:
    """bf16 inputs with float32 output and accumulation on CUDA for uint8 data (centred values are integers
    in [-255, 255], exact in bf16); float32 otherwise (TF32 is allowed only for uint8 data, inputs exact)."""
    if device.type == "cuda" and integer and hasattr(torch.ops.aten.addmm, "dtype"):
        return "bf16"
    return "fp32"


def _neg2_gemm_plus(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """bias[None] - 2 a b^T, float32 result and accumulation."""
    if mode == "bf16":
        return torch.ops.aten.addmm.dtype(bias[None], a, b.T, torch.float32, alpha=-2.0)
    return torch.addmm(bias[None], a, b.T, alpha=-2.0)


def _default_chunks(device: torch.device, n: int, m: int, dim: int) -> tuple[int, int]:
    if device.type == "cuda":  # distance block <= 2^28 float32 = 1 GiB
        q = min(n, 8192)
        return q, max(1, min(m, 2 ** 28 // q))
    q = min(n, 1024)           # distance block <= 2^23 float32 = 32 MiB
    return q, max(1, min(m, 2 ** 23 // q))


# ----------------------------------------------------------------------------------------------------
# exact pieces

def _sort_pairs(d2: torch.Tensor, idx: torch.Tensor, k: int):
    """First k of each row ordered by (d2, idx): sort by index, then stable sort by distance."""
    idx, order = idx.sort(dim=1)
    d2 = d2.gather(1, order)
    d2, order = d2.sort(dim=1, stable=True)
    return d2[:, :k], idx.gather(1, order)[:, :k]


def _exact_rescan(q_exact, ref_exact, k, integer, block_elems):
    """Exact k nearest (ties: lower index) of a few queries by a full scan in float64.

    uint8 data: the float64 expansion ||a||^2 + ||b||^2 - 2ab is exact (every partial sum is an integer
    below 2^53, whatever the summation order). Float data: direct differences, blocked.
    """
    n, dim = q_exact.shape
    m = ref_exact.shape[0]
    qd = q_exact.double()
    best_d = torch.empty(n, 0, dtype=torch.float64, device=qd.device)
    best_i = torch.empty(n, 0, dtype=torch.int64, device=qd.device)
    step = max(1, block_elems // max(n, dim)) if integer else max(1, block_elems // (n * dim))
    qn = (qd * qd).sum(1, keepdim=True)
    for r0 in range(0, m, step):
        r = ref_exact[r0:r0 + step].double()
        if integer:
            d2 = qn + (r * r).sum(1)[None] - 2.0 * qd @ r.T
        else:
            d2 = ((qd[:, None, :] - r[None]) ** 2).sum(-1)
        ids = torch.arange(r0, r0 + r.shape[0], device=qd.device).expand(n, -1)
        # running results hold lower indices than this block, so concatenation order keeps the tie rule
        best_d, best_i = _sort_pairs(torch.cat([best_d, d2], 1), torch.cat([best_i, ids], 1), k)
    return best_d, best_i


def _rerank(q_exact, ref_exact, cand, block_elems):
    """Exact squared distances sum((a - b)^2) in float64 from each query to its candidates."""
    n, c = cand.shape
    dim = q_exact.shape[1]
    out = torch.empty(n, c, dtype=torch.float64, device=cand.device)
    step = max(1, block_elems // max(1, c * dim))
    for s in range(0, n, step):
        diff = ref_exact[cand[s:s + step]].double() - q_exact[s:s + step, None, :].double()
        out[s:s + step] = (diff * diff).sum(-1)
    return out


# ----------------------------------------------------------------------------------------------------

@torch.no_grad()
def nearest_neighbours(queries, reference, k: int = 2, device="cpu", chunk_size=None, exact: bool = True,
                       margin: int = 8, stats: dict | None = None, gemm: str | None = None):
    """Exact k nearest neighbours in pixel space, L2 over the flattened values.

    queries (N, ...), reference (M, ...): numpy arrays or tensors, uint8 (images) or float (any values,
    e.g. 2-D toy points). Returns (dist, index), numpy float64 and int64 of shape (N, k), rows ordered by
    (distance, reference index): ties go to the lower index. Distances are plain L2 (no 1/sqrt(D)).

    Algorithm
      1. Centre both sets on the reference's per-feature mean (rounded to integers for uint8, so centred
         uint8 values are integers in [-255, 255], exact in float32, TF32 and bf16). Distances don't change.
      2. Fast pass, per block of chunk_size = (q, r) queries x references: g = ||b||^2 - 2 a.b by one GEMM
         with float32 output and accumulation (bf16 inputs on CUDA for uint8, which are exact there;
         IEEE float32 otherwise), top-(k + margin) on the device, merged across reference blocks.
         f = ||a||^2 + g is the fast squared distance.
      3. Re-rank the K = k + margin candidates with direct differences in float64 (exact for uint8), and
         order by (distance, index).
      4. Proof of sufficiency: |f - d^2| <= eps = c(D) (||a||^2 + max_j ||b_j||^2) (fast_pass_error_bound).
         Every non-candidate j has f_j >= f_(K), so d_j^2 >= f_(K) - eps. If f_(K) - eps > e_k, the k-th exact
         squared distance among the candidates, no non-candidate can be nearer than or tie with the k-th,
         so the candidates' exact order is the true one. Queries failing the test (e.g. more than K
         near-equal neighbours) are rescanned exactly over the whole reference (`_exact_rescan`).
    exact=False skips steps 3-4 and returns the fast pass (float32-accurate only; for quick looks).

    Memory on the device: the centred reference, M*D*4 bytes (M*D*2 with bf16; plus M*D*8 for float inputs,
    kept for the re-ranking), plus per query chunk about q*D*12 + 2*q*r*4 + q*(k+margin)*24 bytes, plus float64
    re-ranking blocks of <= 2^24 elements (128 MiB; 2^22 on the CPU). Defaults: q = 8192 and q*r <= 2^28
    on CUDA (1 GiB distance block), q = 1024 and q*r <= 2^23 on the CPU. chunk_size: int (both) or (q, r).
    stats: optional dict, filled with n_rescanned (queries that needed the exact rescan), margin, eps_rel, gemm.
    gemm: None (auto: 'bf16' on CUDA for uint8, else 'fp32') or 'fp32'; 'bf16' only for uint8 data.

    Speed: 50,000 x 50,000 images of 32x32x3 take 0.10 s on one H100 with the data already on the GPU,
    0.15 s from numpy arrays in host memory (bf16; 0.13 / 0.18 s with gemm='fp32'), 3.7 GB peak.
    """
    device = torch.device(device)
    q_rows, r_rows = _as_rows(queries), _as_rows(reference)
    n, dim = q_rows.shape
    m = r_rows.shape[0]
    if r_rows.shape[1] != dim:
        raise ValueError(f"queries have {dim} values per item, reference {r_rows.shape[1]}")
    if not 1 <= k <= m:
        raise ValueError(f"need 1 <= k <= number of reference items ({m}), got k={k}")
    integer = q_rows.dtype == torch.uint8 and r_rows.dtype == torch.uint8
    if not integer:
        q_rows, r_rows = q_rows.double(), r_rows.double()
        if not (torch.isfinite(q_rows).all() and torch.isfinite(r_rows).all()):
            raise ValueError("inputs contain NaN or inf")
    if chunk_size is None:
        qc, rc = _default_chunks(device, n, m, dim)
    else:
        qc, rc = (chunk_size, chunk_size) if isinstance(chunk_size, int) else chunk_size
    block_elems = 2 ** 24 if device.type == "cuda" else 2 ** 22
    n_cand = min(k + margin, m)
    eps_rel = fast_pass_error_bound(dim)

    mode = _gemm_mode(device, integer) if gemm is None else gemm
    if mode not in ("fp32", "bf16") or (mode == "bf16" and not integer):
        raise ValueError(f"gemm={gemm!r}: use None, 'fp32', or 'bf16' (uint8 data only)")
    fast_dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    # 1. centred reference on the device, converted once
    ref = r_rows.to(device)
    if integer:
        mu = ref.double().mean(0).round().float()
        ref_fast = (ref.float() - mu).to(fast_dtype)  # exact integers; also the exact copy for re-ranking
        ref_exact = ref_fast
    else:
        mu = ref.mean(0)
        ref_fast = (ref - mu).float()
        ref_exact = ref                             # float64 originals
    del ref
    ref_sq = ref_fast.double().pow(2).sum(1)        # ||b||^2 of the values the GEMM sees
    ref_sq32 = ref_sq.float()
    ref_sq_max = ref_sq.max().item()

    dist2 = torch.empty(n, k, dtype=torch.float64)
    index = torch.empty(n, k, dtype=torch.int64)
    n_rescanned = 0
    with _fp32_matmul(device, allow_tf32=integer):
        for q0 in range(0, n, qc):
            qb = q_rows[q0:q0 + qc].to(device)
            if integer:
                q_fast = (qb.float() - mu).to(fast_dtype)
                q_exact = q_fast
            else:
                q_fast = (qb - mu).float()
                q_exact = qb
            # 2. fast pass: running top-K of g = ||b||^2 - 2 a.b over reference blocks
            best_g = best_i = None
            for r0 in range(0, m, rc):
                g = _neg2_gemm_plus(ref_sq32[r0:r0 + rc], q_fast, ref_fast[r0:r0 + rc], mode)
                v, i = g.topk(min(n_cand, g.shape[1]), dim=1, largest=False, sorted=False)
                i += r0
                if best_g is not None:
                    v, i = torch.cat([best_g, v], 1), torch.cat([best_i, i], 1)
                    v, j = v.topk(n_cand, dim=1, largest=False, sorted=False)
                    i = i.gather(1, j)
                best_g, best_i = v, i
                del g
            q_sq = q_fast.double().pow(2).sum(1)
            if not exact:
                f = (q_sq[:, None] + best_g.double()).clamp_min(0)
                d2, idx = _sort_pairs(f, best_i, k)
            else:
                # 3. exact re-ranking of the candidates
                e2 = _rerank(q_exact, ref_exact, best_i, block_elems)
                d2, idx = _sort_pairs(e2, best_i, k)
                # 4. sufficiency test; rescan the queries it cannot certify
                if n_cand < m:
                    f_last = q_sq + best_g.max(1).values.double()
                    eps = eps_rel * (q_sq + ref_sq_max)
                    bad = torch.nonzero(~(f_last - eps > d2[:, -1])).flatten()
                    if bad.numel():
                        n_rescanned += bad.numel()
                        d2[bad], idx[bad] = _exact_rescan(q_exact[bad], ref_exact, k, integer, block_elems)
            dist2[q0:q0 + qc] = d2.cpu()
            index[q0:q0 + qc] = idx.cpu()
    if stats is not None:
        stats.update(n_rescanned=n_rescanned, margin=margin, eps_rel=eps_rel, chunk_size=(qc, rc), gemm=mode)
    # numpy's sqrt is correctly rounded; torch's vectorised CPU sqrt can differ from CUDA's by one ulp
    return np.sqrt(dist2.numpy()), index.numpy()


# ----------------------------------------------------------------------------------------------------

def _value_range(x) -> tuple[float, float]:
    if isinstance(x, torch.Tensor):
        return float(x.min()), float(x.max())
    return float(np.min(x)), float(np.max(x))


def _kind(dtype) -> str:
    return "uint8" if dtype in (np.uint8, torch.uint8) else "float" if str(dtype).split(".")[-1].startswith(
        ("float", "bfloat")) else str(dtype)


PIXEL_SCALE_LIMIT = 20.0   # |value| above this: [0, 255] pixels; below: [-1, 1] or [0, 1] with overshoot


def check_inputs(samples, train) -> None:
    """Refuse inputs that give a silent wrong memorization score (see the module docstring)."""
    ns, nt = len(samples), len(train)
    if ns == 0 or nt == 0:
        raise ValueError(f"memorization scores need samples and training items, got {ns} samples and {nt} "
                         "training items")
    ks, kt = _kind(samples.dtype), _kind(train.dtype)
    if ks != kt:
        lo_s, hi_s = _value_range(samples)
        lo_t, hi_t = _value_range(train)
        raise ValueError(f"samples are {samples.dtype} in [{lo_s:.3g}, {hi_s:.3g}], the training set {train.dtype} in "
                         f"[{lo_t:.3g}, {hi_t:.3g}]: distances need one convention. Convert explicitly: float samples in "
                         "[-1, 1] -> uint8 with diffrepro.samplers.to_uint8, or uint8 -> [-1, 1] with x / 127.5 - 1")
    if ks not in ("uint8", "float"):
        raise ValueError(f"memorization scores take uint8 images or float arrays, got {samples.dtype}")
    shape_s, shape_t = tuple(samples.shape[1:]), tuple(train.shape[1:])
    if len(shape_s) > 1 and ks == "float":
        (lo_s, hi_s), (lo_t, hi_t) = _value_range(samples), _value_range(train)
        if (max(abs(lo_s), hi_s) > PIXEL_SCALE_LIMIT) != (max(abs(lo_t), hi_t) > PIXEL_SCALE_LIMIT):
            raise ValueError(f"float samples in [{lo_s:.3g}, {hi_s:.3g}] and a float training set in [{lo_t:.3g}, "
                             f"{hi_t:.3g}]: one looks like [0, 255] pixels, the other like [-1, 1] or [0, 1]; bring "
                             "both to one convention (uint8 pixels are the Gu et al. convention)")
    squeeze = lambda shape: tuple(v for v in shape if v != 1)  # noqa: E731
    if squeeze(shape_s) != squeeze(shape_t):
        hint = ""
        if len(shape_s) == 3 and len(shape_t) == 3 and sorted(shape_s) == sorted(shape_t):
            hint = ("; the samples look channels-first: samples.transpose(0, 2, 3, 1)" if shape_s[0] in (1, 3)
                    else "; the samples look channels-last: samples.transpose(0, 3, 1, 2)")
        raise ValueError(f"samples of shape (N, {', '.join(map(str, shape_s))}) and a training set of shape "
                         f"(M, {', '.join(map(str, shape_t))}) have different layouts{hint}")


def distinct_items(train) -> tuple[np.ndarray, int]:
    """Indices (ascending) of the first copy of each distinct training item, exact byte equality (float -0.0
    counted as 0.0), and the number of distinct items."""
    rows = (train.detach().cpu().numpy() if isinstance(train, torch.Tensor) else np.asarray(train))
    rows = np.ascontiguousarray(rows.reshape(len(rows), -1))
    if rows.dtype.kind == "f":
        rows = rows + rows.dtype.type(0)   # -0.0 + 0.0 = 0.0: equal values, equal bytes
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    first.sort()
    return first, len(first)


@dataclass(frozen=True)
class MemorizationScores:
    """Per-sample nearest-neighbour distances and ratios, with the summary of Gu et al."""
    d1: np.ndarray           # distance to the nearest training item (normalised by sqrt(D) for images)
    d2: np.ndarray           # distance to the second nearest
    ratio: np.ndarray        # d1 / d2
    nearest: np.ndarray      # index of the nearest training item (the lowest index among its exact copies)
    second: np.ndarray       # index of the second nearest distinct training item
    threshold: float
    n_train: int
    normalized: bool         # distances divided by sqrt(D)
    n_train_distinct: int = -1   # distinct training items the ratios were computed against (-1: not recorded)

    @property
    def memorized(self) -> np.ndarray:
        return self.ratio < self.threshold

    @property
    def count(self) -> int:
        return int(self.memorized.sum())

    @property
    def n_samples(self) -> int:
        return int(self.ratio.shape[0])

    @property
    def fraction_memorized(self) -> float:
        return self.count / self.n_samples if self.n_samples else float("nan")

    def summary(self) -> dict:
        return dict(fraction_memorized=self.fraction_memorized, count=self.count, n_samples=self.n_samples,
                    n_train=self.n_train, n_train_distinct=self.n_train_distinct, threshold=self.threshold)

    def to_frame(self):
        """Tidy table: one row per sample."""
        import pandas as pd
        return pd.DataFrame(dict(
            sample=np.arange(self.n_samples), nearest_index=self.nearest, second_index=self.second,
            d1=self.d1, d2=self.d2, ratio=self.ratio, memorized=self.memorized,
        ))


def memorization_scores(samples, train, device="cpu", threshold: float = GU_THRESHOLD, normalize=None,
                        **nn_kwargs) -> MemorizationScores:
    """Gu et al. memorization scores of `samples` (N, ...) against `train` (M, ...), per item against the
    *distinct* training items (exact duplicates merged; see the module docstring). Inputs are checked by
    `check_inputs` (same kind, same layout, non-empty).

    uint8 images are compared on their pixel values; distances are divided by sqrt(C*H*W) (normalize=None:
    for uint8 inputs or inputs with more than one value axis; float (N, d) points keep plain L2). The
    ratio, and so the memorized fraction, does not depend on the normalisation.
    nn_kwargs go to `nearest_neighbours` (chunk_size, margin, ...).
    """
    check_inputs(samples, train)
    keep, n_distinct = distinct_items(train)
    if n_distinct < 2:
        raise ValueError(f"the training set holds {n_distinct} distinct item(s) ({len(train)} in all); the Gu ratio "
                         "needs at least two")
    reference = train if n_distinct == len(train) else train[torch.from_numpy(keep).to(train.device)
                                                             if isinstance(train, torch.Tensor) else keep]
    dist, idx = nearest_neighbours(samples, reference, k=2, device=device, **nn_kwargs)
    idx = keep[idx]                                   # back to indices into `train`
    shape = tuple(samples.shape)
    if normalize is None:
        is_uint8 = getattr(samples, "dtype", None) in (np.uint8, torch.uint8)
        normalize = is_uint8 or len(shape) > 2
    if normalize:
        dist = dist / math.sqrt(math.prod(shape[1:]))
    d1, d2 = dist[:, 0], dist[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(d2 > 0, d1 / np.where(d2 > 0, d2, 1.0), 0.0)  # d2 > 0 between distinct items
    return MemorizationScores(d1=d1, d2=d2, ratio=ratio, nearest=idx[:, 0], second=idx[:, 1],
                              threshold=float(threshold), n_train=int(train.shape[0]),
                              normalized=bool(normalize), n_train_distinct=int(n_distinct))


def plot_memorized_pairs(samples, train, scores, path, top: int = 16, **kw):
    """Sample <-> nearest-training-image grid; see `memorization_plots.plot_memorized_pairs` (lazy import)."""
    from diffrepro.metrics.memorization_plots import plot_memorized_pairs as _plot
    return _plot(samples, train, scores, path, top=top, **kw)
