"""Figure: the most-memorized samples beside their nearest training images (sample <-> neighbour pairs)."""
from __future__ import annotations

import math

import numpy as np

from diffrepro.io import atomic_savefig
from diffrepro.plots import plt

__all__ = ["plot_memorized_pairs"]


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_hwc(images: np.ndarray) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} -> (N, H, W, C)."""
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        return images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images
    raise ValueError(f"expected images (N, H, W[, C]) with C in {{1, 3}}, got shape {images.shape}")


def _show(ax, img: np.ndarray, lo: float, hi: float):
    """imshow for a (H, W, C) image: uint8 as is, floats scaled by the shared range [lo, hi]."""
    if img.dtype != np.uint8:
        img = np.clip((img.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0, 1)
        vmax = 1.0
    else:
        vmax = 255
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_memorized_pairs(samples, train, scores, path, top: int = 16, ncols: int = 4, title: str | None = None):
    """Write a PNG grid of the `top` samples with the lowest d1/d2, each beside its nearest training image.

    samples, train: images (N, H, W[, C]) (uint8 or float; grayscale or RGB), or 2-D points (N, 2), for
    which a scatter plot links each shown sample to its nearest training point. scores: MemorizationScores.
    Titles give the sample index and its ratio (red when memorized, ratio < threshold) and the neighbour's
    index. Written atomically; returns the path.
    """
    samples, train = _to_numpy(samples), _to_numpy(train)
    order = np.argsort(scores.ratio, kind="stable")[:top]   # most memorized first; ties by sample index
    if title is None:
        title = (f"Most memorized samples (left) and nearest training images (right); "
                 f"{scores.count}/{scores.n_samples} with d1/d2 < {scores.threshold:.3g}")
    if samples.ndim == 2:
        fig = _scatter_pairs(samples, train, scores, order)
    else:
        fig = _image_pairs(_as_hwc(samples), _as_hwc(train), scores, order, ncols)
    fig.suptitle(title, fontsize=9)
    try:
        atomic_savefig(path, fig, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def _image_pairs(samples, train, scores, order, ncols):
    n = len(order)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, 2 * ncols, figsize=(2 * ncols * 1.3, nrows * 1.55 + 0.5), squeeze=False)
    shown = np.concatenate([samples[order], train[scores.nearest[order]]]) if n else samples[:0]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    for ax in axes.flat:
        ax.axis("off")
    for slot, s in enumerate(order):
        r, c = divmod(slot, ncols)
        ax_s, ax_t = axes[r, 2 * c], axes[r, 2 * c + 1]
        j = int(scores.nearest[s])
        for ax, img in ((ax_s, samples[s]), (ax_t, train[j])):
            ax.axis("on")
            _show(ax, img, lo, hi)
        mem = bool(scores.memorized[s])
        ax_s.set_title(f"#{s} r={scores.ratio[s]:.3f}", fontsize=7, color="tab:red" if mem else "black")
        ax_t.set_title(f"train #{j}", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def _scatter_pairs(samples, train, scores, order):
    if samples.shape[1] != 2:
        raise ValueError(f"points must be 2-D to plot, got shape {samples.shape}")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(train[:, 0], train[:, 1], s=12, c="0.6", label="training points")
    mem = scores.memorized
    ax.scatter(samples[~mem, 0], samples[~mem, 1], s=4, c="tab:blue", alpha=0.5, label="samples")
    ax.scatter(samples[mem, 0], samples[mem, 1], s=6, c="tab:red", label="memorized samples")
    for s in order:
        p, q = samples[s], train[scores.nearest[s]]
        ax.plot([p[0], q[0]], [p[1], q[1]], c="tab:red", lw=0.6)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
