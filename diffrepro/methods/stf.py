"""Stable Target Field (Xu, Tong & Jaakkola, ICLR 2023; methods.md §4).

The denoising target y is replaced by the posterior mean of y over a reference batch R_b that holds
the sample's own clean image y_b:

    target_b = sum_{r in R_b} w_r r,    w = softmax_r(-||x_b - r||^2 / (2 sigma_b^2)),    x_b = y_b + sigma_b n_b

computed without gradient, at every sigma, with a max-subtracted (streaming) softmax.

Reference batch [ours]. Each call draws J: |R|-1 distinct training indices (the first |R|-1 of a
permutation from the step's generator), shared by the whole minibatch; R_b = J + {y_b}, with y_b
counted exactly once: when y_b's own row was drawn into J (probability (|R|-1)/N) that copy is dropped
and R_b has |R|-1 members. Official code (Newbeeer/stf, `EDMLoss.stf_scores`) takes R = one loader batch
of |R| images, the minibatch first, so its members are distinct too. With |R| >= N, R_b is the whole
training set (no draw) and the target is the ideal denoiser D*(x; sigma) of the training set. With
|R| = 1 the target is y, bit for bit, and the generator is not touched.

Why "exactly once": with the source index i uniform and J a uniform subset drawn independently of i,
P(R | i) is the same for every i in R, so the softmax over R_b is the exact posterior p(i | x, R_b).
Hence target = E[y | x, R_b], and E[target | x] = D*(x; sigma) for every |R|: the STF target has the
baseline's regression function and only a smaller variance (tests/test_stf.py enumerates this).
Counting a drawn copy of y_b twice breaks the identity (a doubled member is certainly the source, yet
would only get twice the weight). The copy is found by content (a float64 random projection, nearest
key, then exact comparison of the rows), as the loss hook gets images, not indices. If the training
set holds bit-identical duplicate images, one copy of y_b's content is dropped, not necessarily y_b's
own row: a negligible deviation from the index-level rule, confined to those duplicates.

Numerics. ||x - r||^2 = ||x||^2 + ||r||^2 - 2 x.r with the B x |R| x D product as a matmul in `dtype`
(float32 by default, IEEE: TF32 and autocast are switched off inside the call); norms, logits and the
softmax bookkeeping are float64, and the own term is exact: -||x - y||^2 / (2 sigma^2) from the direct
difference in float64. The float32 product's absolute error e ~ eps32 (||x||^2 + ||r||^2) becomes a
logit error e / (2 sigma^2), which grows at small sigma; but there every distinct image sits
~||y - r||^2 / (2 sigma^2) logits (thousands) below the own term and has weight 0 either way, and the
near-duplicates that still compete differ from y by ~sigma, so a weight error moves the target by
O(sigma). Measured against dtype=float64 on Fashion-MNIST padded to 32x32x3, |R| = 4096: max abs
difference 0 for sigma <= 0.5, <= 6e-6 for sigma in [1, 80]. sigma^2 is clamped at 1e-100, so logits
stay finite for any finite input, and the own term keeps the running maximum finite: outputs are
finite for any finite x and sigma >= 0 (sigma = 0 with x = y gives y).

Memory: R is streamed in chunks of `chunk_size` rows with an online log-sum-exp, one chunk alive at a
time. Transient memory per call ~ chunk*D*s (gathered references, s = bytes of `dtype`) + 6*B*D*8
(float64 x, y, running mean) + 4*B*chunk*8 (products, logits, weights) + 8*N (the permutation)
+ O(|R|) (indices, keys), i.e. independent of |R| beyond O(|R|) vectors. Measured (CPU profiler
memory timeline, B = 64, D = 3072, N = 50k, float32): 22 MiB at chunk 1024 for |R| = 1024, 4096 and
16384 alike; 12 MiB at chunk 256; 63 MiB at chunk 4096. The whole-set mode gathers nothing (views).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

SIGMA2_MIN = 1e-100          # keeps -d2 / (2 sigma^2) finite in float64 for any finite input
_KEY_SEED = 0x57F             # fixed seed of the content fingerprint; never the training generator


@contextlib.contextmanager
def _ieee_fp32_matmul(device: torch.device):
    """Float32 matmuls in full IEEE precision for the block (no TF32), then restore the setting."""
    backend = torch.backends.cuda.matmul if device.type == "cuda" else torch.backends.mkldnn.matmul
    restore = None
    try:
        prev = backend.fp32_precision
        backend.fp32_precision = "ieee"
        restore = lambda: setattr(backend, "fp32_precision", prev)  # noqa: E731
    except (AttributeError, RuntimeError):  # older torch, or the legacy allow_tf32 API in use
        if device.type == "cuda":
            prev_legacy = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            restore = lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", prev_legacy)  # noqa: E731
    try:
        yield
    finally:
        if restore is not None:
            restore()


class StableTargetField:
    """The `target_fn(y, x_noisy, sigma, generator) -> target` hook of DenoisingLoss.

    train_data: (N, ...) float tensor on the training device; the reference batch draws from it.
    ref_batch:  |R|, the number of images in each sample's reference batch (own image included).
    chunk_size: reference rows per streamed chunk (memory, not results, depends on it).
    dtype:      dtype of the distance and weighted-sum matmuls (float32; float64 for oracle checks).
    """

    def __init__(self, train_data: torch.Tensor, ref_batch: int = 1024, chunk_size: int = 1024,
                 dtype: torch.dtype = torch.float32):
        if ref_batch < 1 or chunk_size < 1:
            raise ValueError(f"ref_batch and chunk_size must be >= 1, got {ref_batch}, {chunk_size}")
        self.n_train = train_data.shape[0]
        self.ref_batch = int(ref_batch)
        self.whole_set = self.ref_batch >= self.n_train          # R = the whole training set, no draw
        self.chunk_size = int(chunk_size)
        self.dtype = dtype
        self.device = train_data.device
        self.data = train_data.detach().reshape(self.n_train, -1).to(dtype)
        gen = torch.Generator().manual_seed(_KEY_SEED)
        self.key_vec = torch.randn(self.data.shape[1], generator=gen, dtype=torch.float64).to(self.device)
        sq, keys = [], []
        for start in range(0, self.n_train, 4096):
            block = self.data[start:start + 4096].double()
            sq.append(block.square().sum(1))
            keys.append(block @ self.key_vec)
        self.sq_norms = torch.cat(sq)                           # ||r||^2, float64 (N,)
        self.keys = torch.cat(keys)                             # content fingerprint, float64 (N,)
        if self.whole_set:
            self.sorted_keys, self.key_order = self.keys.sort(stable=True)

    # ------------------------------------------------------------------ reference draw
    def draw_others(self, generator: torch.Generator) -> Optional[torch.Tensor]:
        """|R|-1 distinct training indices shared by the batch; None means the whole training set."""
        if self.whole_set:
            return None
        if self.ref_batch == 1:
            return torch.empty(0, dtype=torch.long, device=self.device)
        perm = torch.randperm(self.n_train, generator=generator, device=generator.device)
        return perm[:self.ref_batch - 1].to(self.device)

    def __call__(self, y: torch.Tensor, x_noisy: torch.Tensor, sigma: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        return self.target(y, x_noisy, sigma, self.draw_others(generator))

    # ------------------------------------------------------------------ the target
    def _own_copy(self, yf: torch.Tensor, others: Optional[torch.Tensor]):
        """Position of a row equal to y_b among the references (nearest fingerprint, checked exactly)."""
        if others is None:
            sorted_keys, order, rows_of = self.sorted_keys, self.key_order, None
        else:
            sorted_keys, order = self.keys[others].sort(stable=True)
            rows_of = others
        n = sorted_keys.shape[0]
        key_y = yf.double() @ self.key_vec
        hi = torch.searchsorted(sorted_keys, key_y).clamp(max=n - 1)
        lo = (hi - 1).clamp(min=0)
        nearer_lo = (sorted_keys[lo] - key_y).abs() <= (sorted_keys[hi] - key_y).abs()
        pos = order[torch.where(nearer_lo, lo, hi)]               # position within the reference list
        row = pos if rows_of is None else rows_of[pos]
        found = (self.data[row] == yf.to(self.dtype)).all(1)
        return pos, found

    def target(self, y: torch.Tensor, x_noisy: torch.Tensor, sigma: torch.Tensor,
               others: Optional[torch.Tensor]) -> torch.Tensor:
        """STF target for given references: `others` are training indices (J), None = whole set."""
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False), _ieee_fp32_matmul(self.device):
            return self._target(y, x_noisy, sigma, others)

    def _target(self, y, x_noisy, sigma, others):
        B = y.shape[0]
        yf = y.reshape(B, -1)
        x64 = x_noisy.reshape(B, -1).double()
        sigma2 = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).reshape(-1).expand(B).square()
        inv_two_s2 = (0.5 / sigma2.clamp_min(SIGMA2_MIN))[:, None]                # 1 / (2 sigma^2)
        n_ref = self.n_train if others is None else others.shape[0]

        # own image: exact logit from the direct difference; it opens the online log-sum-exp
        own_logit = -(x64 - yf.double()).square().sum(1, keepdim=True) * inv_two_s2
        if n_ref > 0:
            copy_pos, copy_found = self._own_copy(yf, others)
        else:
            copy_pos = copy_found = None
        own_in = copy_found[:, None] if others is None else torch.ones_like(own_logit, dtype=torch.bool)
        run_max = torch.where(own_in, own_logit, -torch.inf)
        run_sum = own_in.double()
        run_mean = yf.double() * own_in

        x_mm = x_noisy.reshape(B, -1).to(self.dtype)
        x_sq = x64.square().sum(1, keepdim=True)
        floor = torch.finfo(torch.float64).min
        for start in range(0, n_ref, self.chunk_size):
            stop = min(start + self.chunk_size, n_ref)
            rows = slice(start, stop) if others is None else others[start:stop]
            refs = self.data[rows]                                               # (chunk, D)
            d2 = (x_sq + self.sq_norms[rows][None] - 2 * (x_mm @ refs.T).double()).clamp_min(0)
            logits = -d2 * inv_two_s2
            pos = torch.arange(start, stop, device=logits.device)
            logits = logits.masked_fill(copy_found[:, None] & (pos[None] == copy_pos[:, None]), -torch.inf)
            new_max = torch.maximum(run_max, logits.amax(1, keepdim=True)).clamp_min(floor)
            scale = (run_max - new_max).exp()
            w = (logits - new_max).exp()                                        # (B, chunk), <= 1
            run_mean = run_mean * scale + (w.to(self.dtype) @ refs).double()
            run_sum = run_sum * scale + w.sum(1, keepdim=True)
            run_max = new_max
            del refs, d2, logits, w        # free this chunk before the next gather: one chunk alive at a time
        return (run_mean / run_sum).to(y.dtype).reshape(y.shape)


def build_target_fn(train_data: torch.Tensor, ref_batch: int = 1024, **kw) -> StableTargetField:
    """params.yaml `target: {kind: stf, ref_batch: |R|}` -> the DenoisingLoss target hook."""
    return StableTargetField(train_data, ref_batch=ref_batch, **kw)
