"""Errors of the inference kernels that read a concatenation as its parts (fused_norm.gn_act_parts,
skip_matmul.skip_residual) against float64, as JSON on stdout.

Run by tests/test_parts_kernels.py in a process of its own with TRITON_INTERPRET=1, so that the Triton
kernels run on the CPU (the interpreter); on a CUDA machine, pass --cuda to run them compiled.
"""
from __future__ import annotations

import json
import math
import os
import sys

import torch
import torch.nn.functional as nnf

from diffrepro.nets import fused_norm, norm_split, out_head, skip_matmul
from diffrepro.nets.unet import SongUNet


def rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def cl(x):
    return x.contiguous(memory_format=torch.channels_last)


def tensors(gen, *shapes, offset=0.5, scale=2.0):
    return [torch.randn(*s, generator=gen) * scale + offset for s in shapes]


def norm_case(channels, H, W, G, silu, device, dtype=torch.float32):
    gen = torch.Generator().manual_seed(sum(channels) * 31 + H)
    parts = tensors(gen, *[(2, c, H, W) for c in channels])
    C = sum(channels)
    weight, bias = 1 + 0.3 * torch.randn(C, generator=gen), 0.3 * torch.randn(C, generator=gen)
    ref = nnf.group_norm(torch.cat(parts, 1).double(), G, weight.double(), bias.double(), 1e-6)
    ref = nnf.silu(ref) if silu else ref
    dev = [cl(p.to(device, dtype)) for p in parts]
    supported = fused_norm.parts_supported(dev, G)
    y = fused_norm.group_norm_act_parts(dev, G, weight.to(device), bias.to(device), 1e-6, silu=silu)
    return {"y": rel(y, ref), "supported": supported, "channels_last": y.is_contiguous(memory_format=torch.channels_last),
            "dtype_kept": y.dtype == dtype}


def skip_case(channels, cout, H, W, device, dtype=torch.float32):
    gen = torch.Generator().manual_seed(sum(channels) * 17 + cout + H * W)
    parts = [p.to(dtype) for p in tensors(gen, *[(3, c, H, W) for c in channels])]    # the kernel's own inputs
    residual = tensors(gen, (3, cout, H, W))[0].to(dtype)
    weight = torch.randn(cout, sum(channels), 1, 1, generator=gen) / math.sqrt(sum(channels))
    bias = torch.randn(cout, generator=gen)
    scale = math.sqrt(0.5)
    ref = (residual.double() + nnf.conv2d(torch.cat(parts, 1).double(), weight.double(), bias.double())) * scale
    dev = [cl(p.to(device, dtype)) for p in parts]
    w, b = weight.to(device), bias.to(device)
    supported = skip_matmul.supported(dev, w)
    y = skip_matmul.skip_residual(dev, w, b, cl(residual.to(device, dtype)), scale)
    return {"y": rel(y, ref), "supported": supported, "channels_last": y.is_contiguous(memory_format=torch.channels_last),
            "dtype_kept": y.dtype == dtype}


def tile_moments(y, rows=64):
    """Per (sample, block of `rows` pixels, channel): mean and sum of squared deviations, float64."""
    B, C, H, W = y.shape
    v = y.double().cpu().permute(0, 2, 3, 1).reshape(B, H * W // rows, rows, C)
    mean = v.mean(2)
    return torch.stack([mean, (v - mean[:, :, None]).square().sum(2)], -1)


def moments_case(device):
    """residual_sum's output and moments against float64 and the moments of its own (stored) output."""
    gen = torch.Generator().manual_seed(5)
    h, x = (cl(t.to(device)) for t in tensors(gen, (2, 128, 8, 16), (2, 128, 8, 16)))
    bias = torch.randn(128, generator=gen).to(device)
    y, mom = skip_matmul.residual_sum(h, x, bias, 0.7)
    return {"y": rel(y, (h.double() + bias.double()[:, None, None] + x.double()) * 0.7),
            "moments": rel(mom, tile_moments(y)), "moments_shape": list(mom.shape)}


def norm_moments_case(device):
    """The tiled group norm given a part's moments (two parts, one with moments) against float64."""
    gen = torch.Generator().manual_seed(9)
    parts = tensors(gen, (2, 32, 16, 16), (2, 32, 16, 16), offset=3.0)
    C, G = 64, 8
    weight, bias = 1 + 0.3 * torch.randn(C, generator=gen), 0.3 * torch.randn(C, generator=gen)
    ref = nnf.silu(nnf.group_norm(torch.cat(parts, 1).double(), G, weight.double(), bias.double(), 1e-6))
    moments = [tile_moments(parts[0]).float().to(device), None]
    saved = fused_norm.RESIDENT, fused_norm.TILE
    fused_norm.RESIDENT, fused_norm.TILE = 0, 128
    y = fused_norm.group_norm_act_parts([cl(p.to(device)) for p in parts], G, weight.to(device), bias.to(device),
                                        1e-6, moments=moments)
    # moments that disagree with the part must change the result (they are used, not recomputed)
    wrong = [moments[0] * torch.tensor([2.0, 1.0], device=device), None]
    y_wrong = fused_norm.group_norm_act_parts([cl(p.to(device)) for p in parts], G, weight.to(device),
                                              bias.to(device), 1e-6, moments=wrong)
    fused_norm.RESIDENT, fused_norm.TILE = saved
    return {"y": rel(y, ref), "wrong_moments_y": rel(y_wrong, ref)}


def unet_case(device, model_channels=32, channel_mult=(2, 2)):
    """A small U-Net without gradients: the parts kernels against the plain path (all off), which decoder
    blocks took the parts (whole groups per part, or groups straddling them), and whether the output layer
    took out_head."""
    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=3, model_channels=model_channels, channel_mult=channel_mult, num_blocks=1,
                   attn_resolutions=(4,), dropout=0.0).to(device).to(memory_format=torch.channels_last).eval()
    for m in net.modules():             # non-zero outputs everywhere (zero-initialised layers made active)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight[0].numel()))
    x = cl(torch.randn(2, 3, 8, 8, device=device))
    sigma = torch.rand(2, device=device)
    calls, with_moments, split_calls, heads, pools = [], [], [], [], []
    fused, split, head, pool = fused_norm.gn_act_parts, norm_split.group_norm_act, out_head.head, norm_split.group_norm_act_pool

    def counted(parts, moments, *a, **k):
        if len(parts) > 1:
            calls.append(sum(p.shape[1] for p in parts))
        with_moments.append(sum(m is not None for m in moments))
        return fused(parts, moments, *a, **k)

    def counted_split(parts, *a, **k):
        split_calls.append([p.shape[1] for p in parts])
        return split(parts, *a, **k)

    def counted_head(*a, **k):
        heads.append(1)
        return head(*a, **k)

    def counted_pool(x, *a, **k):
        pools.append(k.get("moments") is not None)
        return pool(x, *a, **k)
    fused_norm.gn_act_parts, norm_split.group_norm_act, out_head.head = counted, counted_split, counted_head
    norm_split.group_norm_act_pool = counted_pool
    out = {}
    with torch.no_grad():
        for flag in ("1", "0"):
            os.environ["DIFFREPRO_FUSED_NORM"] = os.environ["DIFFREPRO_FUSED_SKIP"] = flag
            out[flag] = net(x, sigma)
    os.environ["DIFFREPRO_FUSED_NORM"] = os.environ["DIFFREPRO_FUSED_SKIP"] = "1"
    fused_norm.gn_act_parts, norm_split.group_norm_act, out_head.head = fused, split, head
    norm_split.group_norm_act_pool = pool
    return {"y": rel(out["1"], out["0"].double()), "parts_calls": calls, "norms_given_moments": sum(with_moments),
            "split_calls": split_calls, "head_calls": len(heads), "pools_given_moments": pools}


def split_case(device):
    """norm_split's group norm over parts whose groups straddle them (20 | 44 channels, groups of 8), with
    the first part's moments given or computed, against float64."""
    gen = torch.Generator().manual_seed(11)
    parts = tensors(gen, (2, 20, 6, 9), (2, 44, 6, 9), offset=2.0)
    C, G = 64, 8
    weight, bias = 1 + 0.3 * torch.randn(C, generator=gen), 0.3 * torch.randn(C, generator=gen)
    ref = nnf.silu(nnf.group_norm(torch.cat(parts, 1).double(), G, weight.double(), bias.double(), 1e-6))
    dev = [cl(p.to(device)) for p in parts]
    given = tile_moments(parts[0], rows=9).float().to(device)                 # 6 blocks of 9 pixels
    out = {"supported": norm_split.supported(dev, G)}
    for name, moments in {"computed": None, "given": [given, None]}.items():
        y = norm_split.group_norm_act(dev, G, weight.to(device), bias.to(device), 1e-6, moments=moments)
        out[name] = rel(y, ref)
    out["channels_last"] = y.is_contiguous(memory_format=torch.channels_last)
    return out


def pool_case(device):
    """norm_split.group_norm_act_pool against avg_pool2d(silu(GN(x))) and avg_pool2d(x) in float64, moments given
    or not, and with wrong moments (they must be used)."""
    gen = torch.Generator().manual_seed(19)
    x = tensors(gen, (2, 96, 6, 10), offset=1.5)[0]
    weight, bias = 1 + 0.3 * torch.randn(96, generator=gen), 0.3 * torch.randn(96, generator=gen)
    ref = nnf.avg_pool2d(nnf.silu(nnf.group_norm(x.double(), 12, weight.double(), bias.double(), 1e-6)), 2)
    xd, w, b = cl(x.to(device)), weight.to(device), bias.to(device)
    moments = tile_moments(x, rows=20).float().to(device)
    out = {"supported": norm_split.pool_supported(xd, 12),
           "odd supported": norm_split.pool_supported(cl(torch.zeros(1, 96, 5, 4, device=device)), 12)}
    for name, m in {"computed": None, "given": moments, "wrong": moments * torch.tensor([1.0, 3.0], device=device)}.items():
        y, xp = norm_split.group_norm_act_pool(xd, 12, w, b, 1e-6, moments=m)
        out[name] = rel(y, ref)
    out["x pooled"] = rel(xp, nnf.avg_pool2d(x.double(), 2))
    out["channels_last"] = y.is_contiguous(memory_format=torch.channels_last) and list(y.shape) == [2, 96, 3, 5]
    return out


def channel_moments_case(device):
    """channel_moments against float64, over pixel counts below, at and across its tile (64 pixels)."""
    gen = torch.Generator().manual_seed(13)
    out = {}
    for H, W in [(5, 7), (8, 8), (9, 16)]:
        x = tensors(gen, (3, 70, H, W), offset=4.0)[0]
        ref = tile_moments(x, rows=H * W)
        out[f"{H}x{W}"] = rel(norm_split.channel_moments(cl(x.to(device))), ref)
    return out


def head_case(device):
    """out_head.head against conv3x3(silu(GN(x))) in float64: 3 output channels and 1, moments given or not."""
    gen = torch.Generator().manual_seed(17)
    out = {}
    for C, H, W, cout in [(64, 8, 8, 3), (32, 4, 12, 1)]:
        x = tensors(gen, (2, C, H, W))[0]
        norm = torch.nn.GroupNorm(8, C, eps=1e-6)
        conv = torch.nn.Conv2d(C, cout, 3, padding=1)
        for t in (norm.weight, norm.bias, conv.bias):
            t.data = torch.randn(t.shape, generator=gen) * 0.3 + (1.0 if t is norm.weight else 0.0)
        ref = nnf.conv2d(nnf.silu(nnf.group_norm(x.double(), 8, norm.weight.double(), norm.bias.double(), 1e-6)),
                         conv.weight.double(), conv.bias.double(), padding=1)
        norm, conv, xd = norm.to(device), conv.to(device), cl(x.to(device))
        key = f"{C}->{cout} {H}x{W}"
        out[key + " supported"] = out_head.supported(xd, 8, conv.weight)
        out[key] = rel(out_head.head(xd, norm, conv), ref)
        moments = tile_moments(x, rows=16).float().to(device)
        out[key + " moments"] = rel(out_head.head(xd, norm, conv, moments), ref)
        # moments that disagree with x must change the result (they are used, not recomputed)
        out[key + " wrong moments"] = rel(out_head.head(xd, norm, conv, moments * torch.tensor([2.0, 1.0], device=device)), ref)
    out["5x7 supported"] = out_head.supported(cl(torch.zeros(1, 64, 5, 7, device=device)), 8, conv.weight)
    return out


def scale_shift_case(device):
    """norm_split's scale and shift kernel against the same sums as PyTorch ops in float64: one part, and two
    parts whose moments come over different block counts with groups straddling them (96 + 48 channels in
    groups of 12)."""
    gen = torch.Generator().manual_seed(19)
    out = {}
    for name, parts, G, hw in [("one", [(3, 4, 64)], 8, 256), ("two", [(2, 1, 96), (2, 4, 48)], 12, 64)]:
        moments = []
        for B, T, C in parts:
            m = torch.randn(B, T, C, 2, generator=gen)
            m[..., 0] = 3 * m[..., 0] + 1                       # block means
            m[..., 1] = 50 * m[..., 1].abs()                    # block sums of squared deviations
            moments.append(m)
        C = sum(p[2] for p in parts)
        w, b = torch.randn(C, generator=gen), torch.randn(C, generator=gen)
        ref = norm_split.scale_shift_ops([m.double() for m in moments], hw, G, w.double(), b.double(), 1e-6)
        got = norm_split.scale_shift([m.to(device) for m in moments], hw, G, w.to(device), b.to(device), 1e-6)
        out[name] = max(rel(g, r) for g, r in zip(got, ref))
    return out


def main():
    device = "cuda" if "--cuda" in sys.argv else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # float32 means float32
    os.environ["DIFFREPRO_SPLIT_NORM"] = "0"              # switched off: no split norm, pooling or output head
    off = unet_case(device, model_channels=64, channel_mult=(2, 2))
    os.environ["DIFFREPRO_SPLIT_NORM"] = "1"
    results = {}
    for name, limits in {"resident": {}, "tiled": {"RESIDENT": 0, "TILE": 128}}.items():
        saved = {k: getattr(fused_norm, k) for k in limits}
        for k, v in limits.items():
            setattr(fused_norm, k, v)
        # groups of 8 channels: parts of 64 + 32 channels (8 + 4 groups); 16 + 24 over 5x7 pixels
        for channels, H, W, G in [((64, 32), 8, 8, 12), ((16, 24), 5, 7, 5)]:
            for silu in (True, False):
                results[f"norm {name} {channels} {H}x{W} G={G} silu={silu}"] = norm_case(channels, H, W, G, silu, device)
        for k, v in saved.items():
            setattr(fused_norm, k, v)
    # a group that straddles two parts (20 | 44 channels, groups of 8): not taken
    results["norm straddling supported"] = fused_norm.parts_supported(
        [cl(torch.zeros(1, 20, 4, 4, device=device)), cl(torch.zeros(1, 44, 4, 4, device=device))], 8)
    # two parts, one part; pixels not a multiple of the block (3 x 5 x 7 = 105)
    for channels, cout in [((64, 128), 128), ((64,), 64), ((128, 64), 192)]:
        results[f"skip {channels} -> {cout}"] = skip_case(channels, cout, 5, 7, device)
    if device == "cuda":             # Triton's interpreter multiplies bf16 operands of tl.dot wrongly
        results["skip bf16"] = skip_case((64, 64), 128, 4, 4, device, torch.bfloat16)
    results["skip 32 channels supported"] = skip_matmul.supported(
        [cl(torch.zeros(1, 32, 4, 4, device=device))], torch.zeros(64, 32, 1, 1, device=device))
    with torch.enable_grad():
        w = torch.zeros(64, 64, 1, 1, device=device, requires_grad=True)
        results["skip with gradient supported"] = skip_matmul.supported([cl(torch.zeros(1, 64, 4, 4, device=device))], w)
    results["moments"] = moments_case(device)
    results["norm moments"] = norm_moments_case(device)
    results["unet"] = unet_case(device)
    saved = fused_norm.RESIDENT, fused_norm.TILE
    fused_norm.RESIDENT, fused_norm.TILE = 0, 128           # every norm walks its slab twice: moments wanted
    results["unet tiled"] = unet_case(device, model_channels=64, channel_mult=(1, 1))
    fused_norm.RESIDENT, fused_norm.TILE = saved
    # the last decoder block reads 128 + 64 channels in groups of 6: they straddle the parts
    results["unet straddling"] = unet_case(device, model_channels=64, channel_mult=(2, 2))
    results["unet split off"] = off
    results["split"] = split_case(device)
    results["channel moments"] = channel_moments_case(device)
    results["scale shift"] = scale_shift_case(device)
    results["pool"] = pool_case(device)
    results["head"] = head_case(device)
    print(json.dumps(results))


if __name__ == "__main__":
    with torch.no_grad():
        main()
