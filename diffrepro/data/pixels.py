"""Bring uint8 NHWC images to the channels and resolution a dataset entry asks for.

Channels (`channels: 1 | 3`): gray -> RGB replicates the plane; RGB -> gray is ITU-R 601-2 luma with
PIL's fixed-point rounding, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, bit-identical to
`Image.convert('L')`.

Resolution (`resolution: R`, `resize:`), always to R x R:
  none                  the images must already be R x R;
  pad                   zero-pad symmetrically (exact: the original is the centre crop); needs an even
                        margin on each axis. Right for MNIST-like data on a black background;
  bicubic, bilinear, lanczos, box, nearest
                        PIL's filter of that name on each image. PIL widens the filter by the size
                        ratio when shrinking, so downscaling is antialiased; needs square images
                        (a filter resize of a non-square image would distort it);
  auto (default)        none when the size matches, pad for 28x28 -> 32x32 (Fashion-MNIST, MNIST),
                        bicubic otherwise.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST}
RESIZE_METHODS = ("auto", "none", "pad", *FILTERS)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (N, H, W, C), C in {1, 3} -> (N, H, W, channels): replicate gray, or ITU-R 601-2 luma (PIL's)."""
    c = images.shape[-1]
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if c == channels:
        return images
    if c == 1:
        return np.repeat(images, 3, axis=-1)
    if c != 3:
        raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
    rgb = images.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def pad_to(images: np.ndarray, resolution: int) -> np.ndarray:
    """Zero-pad NHWC images symmetrically to resolution x resolution: exact, the original is the
    center crop. Right for Fashion-MNIST (28 -> 32, background 0), not for natural images."""
    n, h, w, c = images.shape
    dh, dw = resolution - h, resolution - w
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"cannot pad {h}x{w} symmetrically to {resolution}x{resolution} (needs an even, "
                         f"non-negative margin on each axis); pick a filter (resize: bicubic) or another resolution")
    return np.pad(images, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))


def resize_filter(images: np.ndarray, resolution: int, method: str = "bicubic") -> np.ndarray:
    """PIL resize of uint8 NHWC images with the named filter (bicubic is the resize clean-fid's
    `clean` mode uses; PIL antialiases when shrinking)."""
    n, h, w, c = images.shape
    if h != w:
        raise ValueError(f"images are {h}x{w}, not square: a {method} resize to {resolution}x{resolution} "
                         "would distort them; crop them square first, or use resize: pad")
    out = np.empty((n, resolution, resolution, c), np.uint8)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if c == 1 else img)
        out[i] = np.asarray(pil.resize((resolution, resolution), FILTERS[method])).reshape(out.shape[1:])
    return out


def resize_bicubic(images: np.ndarray, resolution: int) -> np.ndarray:
    return resize_filter(images, resolution, "bicubic")


def to_resolution(images: np.ndarray, resolution: int, method: str = "auto") -> tuple[np.ndarray, str]:
    """Bring NHWC images to resolution x resolution by `method` (see the module docstring).
    Returns (images, method used)."""
    h, w = images.shape[1:3]
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}: use one of {', '.join(RESIZE_METHODS)}")
    if method == "auto":
        method = ("none" if (h, w) == (resolution, resolution)
                  else "pad" if (h, w) == (28, 28) and resolution == 32 else "bicubic")
    if method == "none":
        if (h, w) != (resolution, resolution):
            raise ValueError(f"images are {h}x{w}, not {resolution}x{resolution}; set resize: to pad or a filter "
                             f"({', '.join(FILTERS)})")
        return images, method
    if method == "pad":
        return pad_to(images, resolution), method
    if (h, w) == (resolution, resolution):
        return images, method  # a filter resize to the same size is the identity
    return resize_filter(images, resolution, method), method
