"""Plotting helpers shared by the stages and the report: the one place that selects matplotlib's Agg
backend, and the conventions that keep figures readable:

  * one panel per claim or comparison, at most MAX_LINES (6) lines per panel (`groups` splits more);
  * each arm a distinct colour *and* marker (`style(i)`), stable across panels when arms are indexed
    the same way;
  * seeds as a band (`seed_band`: mean line, shaded 95% t interval over seeds), never one line per seed;
  * log axes where the values span decades (`log_if_spans`).

    from diffrepro.plots import plt, style, seed_band, save
"""
from __future__ import annotations

import math
from typing import Iterable, List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_savefig  # noqa: E402

MAX_LINES = 6
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

__all__ = ["plt", "MAX_LINES", "style", "groups", "panels", "seed_band", "band", "log_if_spans", "save",
           "image_grid", "save_image_grid", "save_scatter"]


def style(i: int) -> dict:
    """Colour and marker of the i-th arm of a panel (8 distinct pairs; panels hold at most 6 lines)."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)]}


def groups(items: Sequence, size: int = MAX_LINES) -> List[list]:
    """Split `items` into consecutive groups of at most `size` (one panel each)."""
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def panels(n: int, width: float = 4.6, height: float = 3.5, cols: int = 3):
    """(figure, flat list of n axes) on a grid of at most `cols` columns; spare axes are hidden."""
    cols = max(1, min(cols, n))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def band(ax, x, mean, lo=None, hi=None, label: str = "", i: int = 0, **kw):
    """A line with markers in style i and, if lo/hi are given, its shaded interval."""
    x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    st = {**style(i), "ms": 4, "lw": 1.4, **kw}
    ax.plot(x, mean, label=label, **st)
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(x[ok], lo[ok], hi[ok], color=st["color"], alpha=0.18, lw=0)


def seed_band(ax, x: Sequence, per_seed: Sequence[Sequence[float]], label: str = "", i: int = 0, **kw):
    """Mean over seeds at each x with its 95% t interval shaded (stats.arm); `per_seed[k]` holds the
    seeds' values at x[k] (NaNs dropped). The label says how many seeds."""
    from .report.stats import arm

    xs, means, los, his, ns = [], [], [], [], set()
    for xv, vals in zip(x, per_seed):
        vals = [v for v in vals if v is not None and np.isfinite(v)]
        if not vals:
            continue
        a = arm("", vals)
        xs.append(xv), means.append(a.mean), los.append(a.lo), his.append(a.hi)
        ns.add(a.n)
    if not xs:
        return
    n_text = "/".join(str(n) for n in sorted(ns))
    band(ax, xs, means, los, his, label=f"{label} (n={n_text})" if label else f"n={n_text}", i=i, **kw)


def log_if_spans(ax, values: Iterable[float], axis: str = "y", decades: float = 1.0) -> bool:
    """Log scale on `axis` when the positive finite values span more than `decades` decades."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], dtype=float)
    if len(v) < 2 or math.log10(v.max() / v.min()) <= decades:
        return False
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "125" else "")   # 1, 2, 5 x 10^k labelled
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(plain)
    return True


def save(fig, path, dpi: int = 120):
    """tight_layout, atomic write, close."""
    fig.tight_layout()
    atomic_savefig(path, fig, dpi=dpi)
    plt.close(fig)


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """uint8 (N,H,W,C) -> one uint8 mosaic (rows*H, cols*W, C) with 1-pixel gaps."""
    n, h, w, c = images.shape
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = img
    return grid


def save_image_grid(path, images: np.ndarray, cols: int | None = None):
    from PIL import Image

    from .io import atomic_path

    grid = image_grid(images, cols)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def save_scatter(path, points: np.ndarray, reference: np.ndarray | None = None, title: str = ""):
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=6, c="tab:red", label="training data", zorder=3)
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    if reference is not None:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    atomic_savefig(path, fig)
    plt.close(fig)
