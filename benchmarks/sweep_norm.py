"""Launch-shape sweep of the fused group-norm kernels over DDPM++'s activations: the numbers behind the
choices in diffrepro/fast/fused_norm.py (_blocks).

    python benchmarks/sweep_norm.py --mode eval        # sampling: forward, batch 2,500
    python benchmarks/sweep_norm.py --mode train-fwd   # training forward: + shift, dropout 0.13, batch 512
    python benchmarks/sweep_norm.py --mode bwd         # training backward, batch 512
    python benchmarks/sweep_norm.py --mode eval --shift-compare   # a shift, none, a zero shift (tiled forward)

Each row: (channels, resolution, calls per network evaluation, launch shape [pixels per tile, channels
per program, warps] or null for the library's own choice, ms, TB/s moved at the least). A launch shape
whose tile holds all pixels reads its slab once (resident); smaller tiles walk the pixels twice. At
batch 512 the 8x8 and 16x16 rows take under 0.1 ms and mostly time the host's launch, not the GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import cuda_ms, write_result  # noqa: E402
from diffrepro.fast import fused_norm as F  # noqa: E402

# DDPM++ at 32x32: (channels, resolution, group-norm calls per network evaluation)
SHAPES = [(256, 32, 15), (512, 32, 4), (256, 16, 22), (256, 8, 20), (512, 16, 5), (512, 8, 5), (384, 32, 1),
          (128, 32, 1)]
GROUPS = 32
# --shift-compare: the forward kernel with a per-channel shift, without one, and with a zero shift
_TILED = [None, (256, 32, 8), (256, 32, 16), (128, 32, 8), (128, 32, 4), (512, 32, 16), (256, 64, 16), (64, 32, 4),
          (256, 16, 8)]
SHIFT_COMPARE = {(256, 32): _TILED, (512, 32): _TILED,
                 (256, 16): [None, (256, 16, 8), (256, 32, 8), (256, 32, 16), (256, 64, 16)]}
_choice = [None]
_library_blocks = F._blocks


def _forced_blocks(HW, C, G, backward=False, dropout=False):
    if _choice[0] is None:
        return _library_blocks(HW, C, G, backward, dropout)
    block, channels, warps = _choice[0]
    cg_p2 = F._next_pow2(C // G)
    return block, channels // cg_p2, C // G, cg_p2, warps, block >= HW


def candidates(C, H, mode):
    """Resident shapes (all pixels in one tile) of 8..256 channels up to a tile size, and tiled shapes."""
    HW, cg_p2 = H * H, F._next_pow2(C // GROUPS)
    out = [None]
    for ch in (8, 16, 32, 64, 128, 256):
        if ch < cg_p2 or ch > C:
            continue
        if HW * ch <= (16384 if mode == "bwd" else 32768):
            out += [(HW, ch, w) for w in (4, 8, 16)]
        if HW > 256 and ch in (16, 32, 64):
            out += [(b, ch, w) for b in (64, 128, 256) for w in (4, 8, 16) if b * ch >= 128 * w]
    return out


def main(args):
    F._blocks = _forced_blocks
    batch = 2500 if args.mode == "eval" else 512
    p = 0.13 if args.mode != "eval" else 0.0
    rows = []
    for C, H, calls in SHAPES:
        torch.manual_seed(0)
        x = torch.randn(batch, C, H, H, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w, b = 1 + 0.1 * torch.randn(C, device="cuda"), torch.zeros(C, device="cuda")
        shift = torch.randn(batch, C, device="cuda")
        seed = torch.tensor([1], device="cuda")
        gb = x.numel() * x.element_size() / 1e9
        if args.shift_compare:
            if (C, H) not in SHIFT_COMPARE:
                continue
            for choice in SHIFT_COMPARE[C, H]:
                _choice[0] = choice
                for name, a in (("shift", shift), ("none", None), ("zero", torch.zeros_like(shift))):
                    F.ZERO_SHIFT = name != "none"            # "none": the kernel compiled without a shift
                    ms = cuda_ms(lambda: F.gn_act(x, a, w, b, seed, GROUPS, 1e-6, True, p), 30, 3)
                    rows.append([C, H, calls, choice, name, round(ms, 4), round(2 * gb / ms, 3)])
                    print(rows[-1], flush=True)
            F.ZERO_SHIFT = True
            continue
        _choice[0] = None
        _, mean, rstd = F.gn_act(x, shift, w, b, seed, GROUPS, 1e-6, True, p)
        for choice in candidates(C, H, args.mode):
            _choice[0] = choice
            if args.mode == "bwd":
                ms = cuda_ms(lambda: F.gn_act_backward(x, x, shift, w, b, mean, rstd, seed, GROUPS, True, p), 30, 3)
                passes = 3
            else:
                ms = cuda_ms(lambda: F.gn_act(x, shift, w, b, seed, GROUPS, 1e-6, True, p), 30, 3)
                passes = 2
            rows.append([C, H, calls, choice, round(ms, 4), round(passes * gb / ms, 3)])
            print(rows[-1], flush=True)
    name = f"norm-sweep-{args.mode}-b{batch}" + ("-shift-compare" if args.shift_compare else "")
    write_result(args.out, name, {"batch": batch, "dropout": p, "groups": GROUPS, "rows": rows})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["eval", "train-fwd", "bwd"], default="eval")
    ap.add_argument("--shift-compare", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    main(ap.parse_args())
