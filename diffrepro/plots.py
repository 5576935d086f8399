"""Small plotting helpers shared by the stages and the report (matplotlib, Agg backend)."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_savefig  # noqa: E402


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
