"""Non-leaking augmentation (Karras et al. 2022, EDM, App. F.2; NVlabs/edm training/augment.py): the
geometric transforms, with their parameters as the network's conditioning so that it learns the clean
distribution at label zero, and samples are drawn with the label zeroed.

What EDM does, which we follow [paper / official code]:
  - Each transform fires per image with probability p x its multiplier. CIFAR-10 (train.py with the
    default --augment 0.12): p = 0.12, multipliers xflip 1e8 (p x 1e8 >= 1: the x-flip is a fresh 50/50
    coin on every image), yflip 1, scale 1, rotate_frac 1, aniso 1, translate_frac 1; augment_dim 9.
  - Parameters: isotropic scale 2^(0.2 w), w ~ N(0, 1); rotation by theta ~ U(-pi, pi); anisotropic scale
    2^(0.2 w) along an axis at angle r and 2^(-0.2 w) across it, w ~ N(0, 1), r ~ U(..) with probability
    0.5, else r = 0; fractional translation by (0.125 W w_x, 0.125 H w_y) pixels, w ~ N(0, 1). Pixel
    blitting (off for CIFAR-10): integer rotation by k x 90 degrees, integer translation by
    round(0.125 W u), u ~ U(-1, 1), with mirrored borders.
  - The label (one row per image, zero = no augmentation), in this order, only for enabled transforms:
        xflip (0/1), yflip (0/1), rotate_int (2 bits), translate_int (tx / (0.125 W), ty / (0.125 H)),
        scale (w), rotate_frac (cos theta - 1, sin theta), aniso (w cos r, w sin r),
        translate_frac (w_x, w_y).
    With EDM's CIFAR-10 multipliers: [xflip, yflip, scale, cos-1, sin, aniso_c, aniso_s, tx, ty] (9).
  - Geometry: the geometric transforms are composed into one matrix G_inv (output pixel -> input pixel,
    centred coordinates, x right, y down): scale^-1 . rotation . aniso . translation^-1, and the image is
    resampled once: mirror-padded, upsampled 2x with the Symlet-6 low-pass filter, sampled bilinearly,
    low-passed and decimated 2x, the filter taken as centred on its tap 5 of 12 (its low-frequency
    centroid is at 5.10: a residual shift of 0.05 px, that a rotation or scaling turns into a sub-pixel
    displacement; EDM's pipeline has it too). Flips and the other pixel operations are exact and come
    first.

Our choices [ours]:
  - an image no geometric transform fired on is left bit-exact (EDM resamples every image of a batch once
    a geometric transform is enabled, an identity up to float rounding);
  - the aniso axis r is drawn on [-pi/2, pi/2) instead of (-pi, pi): the transform depends on r only
    modulo pi, the label w (cos r, sin r) does not; on the full circle (w, r) and (-w, r + pi) share a
    label but are different transforms. The half circle gives the same distribution of transforms and of
    labels, and a label that determines its transform (`decode` inverts it);
  - draws come from a torch.Generator in a fixed order, in float32, outside autocast; with shard=(rank,
    world) the parameters of the whole global batch are drawn and each rank takes its slice, so data
    parallel runs augment like a single process (the mirror padding is sized per batch, as in EDM, so
    the pixels agree up to float rounding, ~1e-5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

# Symlet-6 low-pass decomposition filter (orthonormal: sum 2^0.5, unit norm, orthogonal to its even
# shifts; 6 vanishing moments of the matching high-pass). EDM resamples with it (wavelets['sym6']).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)


@dataclass(frozen=True)
class AugmentPipe:
    """Probability multipliers (0: off; the label has no entry for it) and ranges, named as in EDM."""
    xflip: float = 0
    yflip: float = 0
    rotate_int: float = 0
    translate_int: float = 0
    scale: float = 0
    rotate_frac: float = 0
    aniso: float = 0
    translate_frac: float = 0
    translate_int_max: float = 0.125     # integer translation range, relative to the image size
    scale_std: float = 0.2               # log2 std of the isotropic scale
    rotate_frac_max: float = 1.0         # rotation range, 1 = full circle
    aniso_std: float = 0.2               # log2 std of the anisotropic scale
    aniso_rotate_prob: float = 0.5       # probability that the aniso axis is rotated
    translate_frac_std: float = 0.125    # std of the fractional translation, relative to the image size

    @property
    def label_names(self) -> list:
        names = []
        for field, labels in (("xflip", ["xflip"]), ("yflip", ["yflip"]), ("rotate_int", ["rot90_a", "rot90_b"]),
                              ("translate_int", ["tx_int", "ty_int"]), ("scale", ["scale"]),
                              ("rotate_frac", ["rot_cos_m1", "rot_sin"]), ("aniso", ["aniso_cos", "aniso_sin"]),
                              ("translate_frac", ["tx", "ty"])):
            if getattr(self, field) > 0:
                names += labels
        return names

    @property
    def label_dim(self) -> int:
        return len(self.label_names)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


EDM_CIFAR10 = AugmentPipe(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
EDM_CIFAR10_P = 0.12       # train.py --augment default
EDM_CIFAR10_DIM = 9        # network_kwargs.augment_dim


class Augmentation(NamedTuple):
    """One draw of the pipeline for n images: what to do to each, and its label."""
    xflip: torch.Tensor       # (n,) bool
    yflip: torch.Tensor       # (n,) bool
    rot90: torch.Tensor       # (n,) int64 in 0..3
    shift: torch.Tensor       # (n, 2) int64 (tx, ty) integer translation
    geometric: torch.Tensor   # (n,) bool: a geometric transform fired
    G_inv: torch.Tensor       # (n, 3, 3) float32: output pixel -> input pixel, centred coordinates
    labels: torch.Tensor      # (n, label_dim) float32


# --- 2-D homogeneous matrices --------------------------------------------------------------------------

def _mat(rows) -> torch.Tensor:
    """(n, 3, 3) from a 3 x 3 nested list of (n,) tensors or numbers."""
    ref = next(v for row in rows for v in row if torch.is_tensor(v))
    return torch.stack([torch.stack([v if torch.is_tensor(v) else torch.full_like(ref, float(v)) for v in row], -1)
                        for row in rows], -2)


def _rotation(theta):            # counter-clockwise in (x right, y down) pixel axes: EDM's rotate2d
    c, s = torch.cos(theta), torch.sin(theta)
    return _mat([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _scaling(sx, sy):
    return _mat([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _translation(tx, ty):
    return _mat([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _geometry(pipe: AugmentPipe, size, scale_w, theta, aniso_w, aniso_r, tw) -> torch.Tensor:
    """G_inv = scale^-1 . rotation(theta) . rotation(-r) aniso^-1 rotation(r) . translation^-1 (EDM's order)."""
    h, w = size
    n = scale_w.shape[0]
    G = torch.eye(3, device=scale_w.device).expand(n, 3, 3)
    if pipe.scale > 0:
        s = torch.exp2(scale_w * pipe.scale_std)
        G = G @ _scaling(1 / s, 1 / s)
    if pipe.rotate_frac > 0:
        G = G @ _rotation(theta)
    if pipe.aniso > 0:
        s = torch.exp2(aniso_w * pipe.aniso_std)
        G = G @ _rotation(-aniso_r) @ _scaling(1 / s, s) @ _rotation(aniso_r)
    if pipe.translate_frac > 0:
        G = G @ _translation(-tw[:, 0] * (w * pipe.translate_frac_std), -tw[:, 1] * (h * pipe.translate_frac_std))
    return G


# --- drawing and decoding ------------------------------------------------------------------------------

def draw(pipe: AugmentPipe, n: int, p: float, generator: torch.Generator, size) -> Augmentation:
    """Draw the augmentation of n images of size (H, W) at overall probability p, from `generator` (on
    its device), in a fixed order."""
    dev = generator.device
    zeros = torch.zeros(n, device=dev)

    def fires(mult):             # per image, with probability p * mult
        return torch.rand(n, generator=generator, device=dev) < p * mult

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=dev)

    labels = []
    xflip = yflip = torch.zeros(n, dtype=torch.bool, device=dev)
    rot90 = torch.zeros(n, dtype=torch.int64, device=dev)
    shift = torch.zeros(n, 2, dtype=torch.int64, device=dev)
    if pipe.xflip > 0:
        xflip = (torch.rand(n, generator=generator, device=dev) < 0.5) & fires(pipe.xflip)
        labels.append(xflip.float())
    if pipe.yflip > 0:
        yflip = (torch.rand(n, generator=generator, device=dev) < 0.5) & fires(pipe.yflip)
        labels.append(yflip.float())
    if pipe.rotate_int > 0:
        rot90 = torch.randint(4, (n,), generator=generator, device=dev) * fires(pipe.rotate_int)
        labels += [((rot90 == 1) | (rot90 == 2)).float(), ((rot90 == 2) | (rot90 == 3)).float()]
    if pipe.translate_int > 0:
        u = torch.stack([uniform(-1, 1), uniform(-1, 1)], 1) * fires(pipe.translate_int)[:, None]
        h, w = size
        shift = torch.round(u * torch.tensor([w, h], device=dev) * pipe.translate_int_max).long()
        labels += [shift[:, 0] / (w * pipe.translate_int_max), shift[:, 1] / (h * pipe.translate_int_max)]
    scale_w = theta = aniso_w = aniso_r = zeros
    tw = torch.zeros(n, 2, device=dev)
    geometric = torch.zeros(n, dtype=torch.bool, device=dev)
    if pipe.scale > 0:
        on = fires(pipe.scale)
        scale_w = torch.randn(n, generator=generator, device=dev) * on
        geometric |= on
        labels.append(scale_w)
    if pipe.rotate_frac > 0:
        on = fires(pipe.rotate_frac)
        theta = uniform(-math.pi, math.pi) * pipe.rotate_frac_max * on
        geometric |= on
        labels += [torch.cos(theta) - 1, torch.sin(theta)]
    if pipe.aniso > 0:
        on = fires(pipe.aniso)
        aniso_w = torch.randn(n, generator=generator, device=dev) * on
        turned = torch.rand(n, generator=generator, device=dev) < pipe.aniso_rotate_prob
        aniso_r = uniform(-math.pi / 2, math.pi / 2) * (turned & on)   # half circle: see the module docstring
        geometric |= on
        labels += [aniso_w * torch.cos(aniso_r), aniso_w * torch.sin(aniso_r)]
    if pipe.translate_frac > 0:
        on = fires(pipe.translate_frac)
        tw = torch.randn(n, 2, generator=generator, device=dev) * on[:, None]
        geometric |= on
        labels += [tw[:, 0], tw[:, 1]]
    G_inv = _geometry(pipe, size, scale_w, theta, aniso_w, aniso_r, tw)
    lab = torch.stack(labels, 1).float() if labels else torch.zeros(n, 0, device=dev)
    return Augmentation(xflip, yflip, rot90, shift, geometric, G_inv, lab)


def decode(labels: torch.Tensor, pipe: AugmentPipe, size) -> Augmentation:
    """The augmentation a label row encodes (the inverse of `draw`'s labels): flips, quarter turns and
    integer shifts exactly, and the geometric matrix G_inv from (scale w, theta, aniso w and axis r in
    [-pi/2, pi/2), translation)."""
    n = labels.shape[0]
    dev = labels.device
    cols = dict(zip(pipe.label_names, labels.float().unbind(1)))
    zeros = torch.zeros(n, device=dev)
    xflip = cols.get("xflip", zeros) > 0.5
    yflip = cols.get("yflip", zeros) > 0.5
    a, b = cols.get("rot90_a", zeros) > 0.5, cols.get("rot90_b", zeros) > 0.5
    rot90 = torch.where(a & ~b, 1, torch.where(a & b, 2, torch.where(b, 3, 0))).long()
    h, w = size
    shift = torch.stack([torch.round(cols.get("tx_int", zeros) * w * pipe.translate_int_max),
                         torch.round(cols.get("ty_int", zeros) * h * pipe.translate_int_max)], 1).long()
    scale_w = cols.get("scale", zeros)
    theta = torch.atan2(cols.get("rot_sin", zeros), cols.get("rot_cos_m1", zeros) + 1)
    ac, as_ = cols.get("aniso_cos", zeros), cols.get("aniso_sin", zeros)
    r = torch.atan2(as_, ac)
    flip = (r >= math.pi / 2) | (r < -math.pi / 2)         # bring the axis to [-pi/2, pi/2), w changes sign
    aniso_r = torch.where(flip, r - math.pi * torch.sign(r), r)
    aniso_w = torch.hypot(ac, as_) * torch.where(flip, -1.0, 1.0)
    tw = torch.stack([cols.get("tx", zeros), cols.get("ty", zeros)], 1)
    geo_cols = [c for c in ("scale", "rot_cos_m1", "rot_sin", "aniso_cos", "aniso_sin", "tx", "ty") if c in cols]
    geometric = torch.stack([cols[c] != 0 for c in geo_cols], 1).any(1) if geo_cols else zeros.bool()
    G_inv = _geometry(pipe, size, scale_w, theta, aniso_w, aniso_r, tw)
    return Augmentation(xflip, yflip, rot90, shift, geometric, G_inv, labels)


# --- applying -------------------------------------------------------------------------------------------

def _mirror(i: torch.Tensor, n: int) -> torch.Tensor:
    """Index i reflected into 0..n-1 (edge pixels not repeated), as EDM's integer translation."""
    return n - 1 - (n - 1 - i % (2 * n - 2)).abs()


def _blit(x: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """The exact pixel operations: x-flip, y-flip, quarter turns, integer translation."""
    flip = lambda m: m[:, None, None, None]  # noqa: E731
    x = torch.where(flip(aug.xflip), x.flip(3), x)
    x = torch.where(flip(aug.yflip), x.flip(2), x)
    if aug.rot90.any():
        k = aug.rot90
        if x.shape[2] != x.shape[3]:
            raise ValueError(f"quarter turns need square images, got {tuple(x.shape[2:])}")
        x = torch.where(flip((k == 1) | (k == 2)), x.flip(3), x)
        x = torch.where(flip((k == 2) | (k == 3)), x.flip(2), x)
        x = torch.where(flip((k == 1) | (k == 3)), x.transpose(2, 3), x)
    if aug.shift.any():
        n, c, h, w = x.shape
        cols = _mirror(torch.arange(w, device=x.device)[None] - aug.shift[:, :1], w)   # (n, W): x - tx
        rows = _mirror(torch.arange(h, device=x.device)[None] + aug.shift[:, 1:], h)   # (n, H): y + ty (EDM's sign)
        x = x.gather(3, cols[:, None, None, :].expand(n, c, h, w))
        x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    return x


def _filter_1d(x: torch.Tensor, taps: torch.Tensor, dim: int, stride: int, padding: int) -> torch.Tensor:
    """Depthwise correlation of (n, C, H, W) with `taps` along dim 2 or 3."""
    c = x.shape[1]
    k = taps.view(1, 1, -1, 1) if dim == 2 else taps.view(1, 1, 1, -1)
    st = (stride, 1) if dim == 2 else (1, stride)
    pad = (padding, 0) if dim == 2 else (0, padding)
    return F.conv2d(x, k.expand(c, 1, *k.shape[2:]), stride=st, padding=pad, groups=c)


def _upsample2(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the low-pass `taps` along W then H: samples with zeros between them (2L - 1),
    convolved with the filter (2L out). Output sample j sits at input coordinate j / 2 (the filter taken
    as centred on its tap 5, as EDM does)."""
    flipped = taps.flip(0)                       # correlation with the flipped filter = convolution
    for dim in (3, 2):
        shape = list(x.shape)
        shape[dim] = 2 * shape[dim] - 1
        z = x.new_zeros(shape)
        z.narrow(dim, 0, shape[dim]).unfold(dim, 1, 2).squeeze(-1).copy_(x)  # every other sample
        x = _filter_1d(z, flipped, dim, 1, len(taps) // 2)
    return x


def _resample(x: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
    """out(pixel) = x(G_inv pixel), centred pixel coordinates, via mirror padding, 2x upsampling with the
    Symlet-6 filter, bilinear sampling, low-pass and 2x decimation (EDM's resampling)."""
    n, c, h, w = x.shape
    taps = torch.tensor(SYM6, dtype=x.dtype, device=x.device)
    border = len(SYM6) // 4                      # output pixels computed beyond each edge, then cropped
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # how far outside the image the transformed corners read, plus the filter's reach: the mirror padding
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=x.dtype, device=x.device)
    pts = G_inv @ corners.T                      # (n, 3, 4)
    px, py = pts[:, 0] + cx, pts[:, 1] + cy      # input pixel coordinates of the corners
    reach = torch.stack([-px.min(), -py.min(), px.max() - (w - 1), py.max() - (h - 1)]) + 2 * border
    limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=x.dtype, device=x.device)
    left, top, right, bottom = (int(v) for v in torch.minimum(reach.clamp_min(0), limit).ceil().tolist())
    padded = F.pad(x, [left, right, top, bottom], mode="reflect")
    up = _upsample2(padded, taps)                # (n, c, 2 Hp, 2 Wp)
    # the 2x output grid: sample q <-> output pixel u = q / 2 - border (the decimation below keeps the
    # samples whose filter window is centred on tap 5 at q = 2 (u + border))
    qx = torch.arange(2 * (w + 2 * border), dtype=x.dtype, device=x.device) / 2 - border - cx
    qy = torch.arange(2 * (h + 2 * border), dtype=x.dtype, device=x.device) / 2 - border - cy
    gy, gx = torch.meshgrid(qy, qx, indexing="ij")
    ones = torch.ones_like(gx)
    src = torch.einsum("nij,jhw->nhwi", G_inv[:, :2], torch.stack([gx, gy, ones]))   # input centred coords
    # input pixel -> padded pixel p -> upsampled sample j = 2 p -> grid_sample's [-1, 1] (align_corners=False)
    jx = 2 * (src[..., 0] + cx + left)
    jy = 2 * (src[..., 1] + cy + top)
    grid = torch.stack([(2 * jx + 1) / up.shape[3] - 1, (2 * jy + 1) / up.shape[2] - 1], -1)
    out = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    pad = (len(SYM6) - 1) // 2                   # low-pass, keep every other sample, crop the border
    out = _filter_1d(out, taps, 3, 2, pad)[:, :, :, border:-border]
    return _filter_1d(out, taps, 2, 2, pad)[:, :, border:-border, :]


def apply(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Apply a drawn (or decoded) augmentation to (n, C, H, W) images, in float32 outside autocast; images
    no geometric transform fired on are only blitted (bit-exact)."""
    dtype = images.dtype
    with torch.autocast(images.device.type, enabled=False):
        x = _blit(images.float(), aug)
        idx = torch.nonzero(aug.geometric).flatten()
        if idx.numel():
            x = x.clone()
            x[idx] = _resample(x[idx], aug.G_inv[idx].to(x.device, torch.float32))
    return x.to(dtype)


def augment(images: torch.Tensor, p: float, generator: torch.Generator, pipe: AugmentPipe = EDM_CIFAR10,
            shard: Optional[tuple] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(augmented images, augmentation labels (n, pipe.label_dim)) of a batch (n, C, H, W), drawn from
    `generator` at overall probability p. shard=(rank, world): `images` is this rank's slice of a global
    batch of world * n; the global batch's parameters are drawn and sliced."""
    rank, world = shard or (0, 1)
    n = images.shape[0]
    with torch.autocast(images.device.type, enabled=False):     # parameters and matrices in float32
        aug = draw(pipe, n * world, p, generator, images.shape[2:])
    part = slice(rank * n, (rank + 1) * n)
    aug = Augmentation(*(t[part].to(images.device) for t in aug))
    return apply(images, aug), aug.labels


class NonLeakingAugment:
    """The training hook: `DenoisingLoss(augment_fn=NonLeakingAugment(0.12))` augments each batch before
    noise is added and hands the labels to the network as `augment_labels`."""

    def __init__(self, p: float = EDM_CIFAR10_P, pipe: AugmentPipe = EDM_CIFAR10):
        self.p, self.pipe = float(p), pipe

    def __call__(self, images, generator, shard=None):
        return augment(images, self.p, generator, self.pipe, shard)


def training_hook(training: dict) -> Optional[NonLeakingAugment]:
    """The loss hook a training entry of params.yaml asks for: `augment: p` (p > 0) is EDM's CIFAR-10 pipeline
    at probability p; absent or 0: none (the network then has no augmentation input, as in EDM)."""
    p = float(training.get("augment") or 0)
    return NonLeakingAugment(p, EDM_CIFAR10) if p > 0 else None
