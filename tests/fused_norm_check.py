"""Errors of the fused group-norm kernels against a float64 reference, as JSON on stdout.

Run by tests/test_fused_norm.py in a process of its own with TRITON_INTERPRET=1, so that the Triton
kernels run on the CPU (the interpreter); on a CUDA machine, pass --cuda to run them compiled.
"""
from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as nnf

from diffrepro import fast
from diffrepro.fast import fused_norm, norm
from diffrepro.nets.unet import SongUNet

# (B, C, H, W, groups): channels per group 4, 8, 3 (padded to 4), 16; pixels a power of two or not,
# in one tile or several (the last one partly filled)
SHAPES = [(2, 16, 8, 8, 4), (2, 64, 4, 4, 8), (3, 12, 5, 5, 4), (2, 32, 6, 6, 2), (2, 32, 12, 12, 8)]


def reference(x, add, weight, bias, groups, eps, silu):
    z = x if add is None else x + add[:, :, None, None]
    y = nnf.group_norm(z, groups, weight, bias, eps)
    return nnf.silu(y) if silu else y


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def case(shape, dtype, with_add, silu, p, device, offset=0.5, scale=2.0):
    B, C, H, W, G = shape
    gen = torch.Generator().manual_seed(hash((shape, with_add, silu, p)) % 2 ** 31)
    x = (torch.randn(B, C, H, W, generator=gen) * scale + offset).to(dtype)
    add = (torch.randn(B, C, generator=gen)).to(dtype) if with_add else None
    weight, bias = 1 + 0.3 * torch.randn(C, generator=gen), 0.3 * torch.randn(C, generator=gen)
    dy = torch.randn(B, C, H, W, generator=gen).to(dtype)

    leaves = [t.to(device).requires_grad_() if t is not None else None for t in (x, add, weight, bias)]
    xd, addd, wd, bd = leaves
    y = fused_norm.group_norm_act(xd.to(memory_format=torch.channels_last), G, wd, bd, 1e-6,
                                  add=addd, silu=silu, dropout=p)
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None],
                                dy.to(device).to(memory_format=torch.channels_last))

    ref_leaves = [t.double().requires_grad_() if t is not None else None for t in (x, add, weight, bias)]
    y_ref = reference(*ref_leaves, G, 1e-6, silu)
    keep = (y.detach().cpu() != 0).double() if p > 0 else torch.ones_like(y_ref)
    y_ref = y_ref * keep / (1 - p)
    ref_grads = torch.autograd.grad(y_ref, [t for t in ref_leaves if t is not None], dy.double())
    names = ["x", "add", "weight", "bias"] if with_add else ["x", "weight", "bias"]
    out = {"y": rel(y.cpu(), y_ref), "channels_last": y.is_contiguous(memory_format=torch.channels_last),
           "dtype_kept": y.dtype == dtype, **{f"d{n}": rel(g.cpu(), r) for n, g, r in zip(names, grads, ref_grads)}}
    if p > 0:
        out["kept_fraction"] = keep.mean().item()
    return out


def mask_case(device, p=0.3):
    """Dropout masks: the kept fraction, and independence between two calls (different seeds) and
    between neighbouring elements (a mask that repeats would show in either)."""
    x = torch.randn(4, 32, 16, 16, device=device).to(memory_format=torch.channels_last)
    w, b = torch.ones(32, device=device), torch.zeros(32, device=device)
    k1, k2 = (fused_norm.group_norm_act(x, 8, w, b, 1e-6, silu=False, dropout=p) != 0 for _ in range(2))
    k1, k2 = k1.permute(0, 2, 3, 1).flatten().double(), k2.permute(0, 2, 3, 1).flatten().double()
    return {"n": k1.numel(), "kept": k1.mean().item(), "both_calls": (k1 * k2).mean().item(),
            "both_neighbours": (k1[1:] * k1[:-1]).mean().item(), "expected_both": (1 - p) ** 2}


def unet_case(device):
    """A small U-Net, fast (fused norm, float32) against the plain network in float64: output and parameter
    gradients; then the same fast network traced by torch.compile in one graph (no break at the kernels)."""
    import copy
    torch.manual_seed(0)
    plain = SongUNet(img_resolution=8, in_channels=3, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                     attn_resolutions=(4,), dropout=0.0)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net = fast.make_fast(copy.deepcopy(plain).to(device))
    plain = plain.double()
    x, sigma = torch.randn(2, 3, 8, 8), torch.rand(2)
    calls = []
    kernel = fused_norm.group_norm_act
    norm.fused_norm.group_norm_act = lambda *a, **k: calls.append(1) or kernel(*a, **k)
    result = {}
    # the float64 reference runs on the CPU, whatever device the fast network is on
    for name, model, dev, dtype in (("fast", net, device, torch.float32), ("plain", plain, "cpu", torch.float64)):
        y = model(x.to(dev, dtype), sigma.to(dev, dtype))
        y.square().sum().backward()
        result[name] = [y.detach().cpu()] + [m.weight.grad.cpu() for m in (
            model.enc["8x8_block0"].norm1, model.dec["8x8_block1"].norm0, model.dec["4x4_in0"].norm2, model.out_norm)] + [
            model.dec["8x8_block1"].conv0.bias.grad.cpu()]
    norm.fused_norm.group_norm_act = kernel
    names = ["y", "dnorm1_weight", "ddec_norm0_weight", "dnorm2_weight", "dout_norm_weight", "ddec_conv0_bias"]
    out = {"fused_calls": len(calls), "norm_layers": sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules()),
           **{n: rel(a, b) for n, a, b in zip(names, result["fast"], result["plain"])}}
    with torch.no_grad():
        xd, sd = x.to(device), sigma.to(device)
        traced = torch.compile(net, backend="eager", fullgraph=True)(xd, sd)
        out["traced"] = rel(traced.cpu(), net(xd, sd).cpu())
    return out


# DDPM++'s group size (8 channels) at 32x32 and 8x8: programs of 32 channels walking 4 tiles (8 with
# dropout) in the forward pass and one resident group of 1024 pixels in the backward pass; all 32
# groups of an 8x8 sample resident in one program
DDPMPP_SHAPES = [(1, 64, 32, 32, 8), (2, 256, 8, 8, 32)]

# the two ways a program covers its slab: loaded once and kept (small slabs, the default here), or
# walked twice in tiles (large slabs); small limits force the second on these small shapes
LAYOUTS = {"resident": {}, "tiled": {"RESIDENT": 0, "RESIDENT_BWD": 0, "TILE": 128, "TILE_DROPOUT": 128}}


def layout(name):
    defaults = {k: getattr(fused_norm, k) for k in ("RESIDENT", "RESIDENT_BWD", "TILE", "TILE_DROPOUT")}
    for k, v in {**defaults, **LAYOUTS[name]}.items():
        setattr(fused_norm, k, v)
    return defaults


def launch_kinds(shape):
    """(resident forward, resident backward, tiles per program) for this shape under the current limits."""
    B, C, H, W, G = shape
    fwd, bwd = fused_norm._blocks(H * W, C, G), fused_norm._blocks(H * W, C, G, backward=True)
    return fwd[-1], bwd[-1], -(-H * W // fwd[0])


def main():
    device = "cuda" if "--cuda" in sys.argv else "cpu"
    # the kernels are checked in true float32: the network's convolutions and matmuls around them must not
    # round to TF32 (PyTorch's default for cuDNN convolutions), or the U-Net case measures TF32, not the kernels
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    results = {"supported_cpu_interpreter": fused_norm.supported(torch.zeros(1, 4, 2, 2).to(memory_format=torch.channels_last), 2)}
    for name in LAYOUTS:
        defaults = layout(name)
        for shape in SHAPES:
            results[f"{name} {shape} launch"] = launch_kinds(shape)
            for with_add, silu, p in [(False, True, 0.0), (True, True, 0.0), (False, False, 0.0), (True, True, 0.5)]:
                key = f"{name} {shape} add={with_add} silu={silu} p={p}"
                results[key + " fp32"] = case(shape, torch.float32, with_add, silu, p, device)
        if name == "resident":
            # DDPM++'s own shapes under the default launch shapes: tiled forward, resident backward
            for shape in DDPMPP_SHAPES:
                results[f"ddpmpp {shape} launch"] = launch_kinds(shape)
                for with_add, p in [(True, 0.1), (False, 0.0)]:     # without a shift: the zero-shift launch
                    results[f"ddpmpp {shape} add={with_add} silu=True p={p} fp32"] = case(
                        shape, torch.float32, with_add, True, p, device)
        results[f"{name} (2, 32, 12, 12, 8) offset fp32"] = case((2, 32, 12, 12, 8), torch.float32, True, True, 0.0,
                                                                 device, offset=50.0, scale=0.5)
        for k, v in defaults.items():
            setattr(fused_norm, k, v)
    results["(2, 64, 4, 4, 8) bf16"] = case((2, 64, 4, 4, 8), torch.bfloat16, True, True, 0.0, device)
    results["dropout_masks"] = mask_case(device)
    results["unet"] = unet_case(device)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
