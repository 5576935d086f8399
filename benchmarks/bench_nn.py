"""Exact nearest neighbours for memorization: 50,000 samples x 50,000 training images of 32x32x3,
checked against a float64 reference, next to a plain chunked torch.cdist + top-2.

    python benchmarks/bench_nn.py --num 50000 --check 2000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, peak_memory_gib, write_result  # noqa: E402
from benchmarks.bench_fid import image_set  # noqa: E402
from diffrepro.metrics.memorization import nearest_neighbours  # noqa: E402


def float64_reference(q, r, chunk=256):
    """Direct float64 top-2 (uint8 data: squared distances are exact integers)."""
    r64 = r.double()
    r_sq = (r64 ** 2).sum(1)
    dists, idx = [], []
    for s in range(0, len(q), chunk):
        a = q[s:s + chunk].double()
        d = (a ** 2).sum(1, keepdim=True) + r_sq[None] - 2 * a @ r64.T
        v, i = torch.topk(d, 2, largest=False, sorted=True)
        dists.append(v.clamp_min(0).sqrt())
        idx.append(i)
    return torch.cat(dists).cpu().numpy(), torch.cat(idx).cpu().numpy()


def cdist_baseline(q, r, chunk=8192):
    out = []
    for s in range(0, len(q), chunk):
        d = torch.cdist(q[s:s + chunk], r)
        out.append(torch.topk(d, 2, largest=False).indices)
    return torch.cat(out)


def main(args):
    samples = torch.from_numpy(image_set(args.num, seed=5)).cuda()
    train = torch.from_numpy(image_set(args.num, seed=6)).cuda()
    nearest_neighbours(samples[:1000], train, k=2, device="cuda")          # warm-up
    with Timer() as t:
        dist, idx = nearest_neighbours(samples, train, k=2, device="cuda")
    peak = peak_memory_gib()
    qf, rf = samples.reshape(len(samples), -1).float(), train.reshape(len(train), -1).float()
    torch.backends.cuda.matmul.allow_tf32 = False
    cdist_baseline(qf[:1000], rf)
    with Timer() as tb:
        cdist_baseline(qf, rf)
    pick = np.random.default_rng(0).choice(args.num, args.check, replace=False)
    rd, ri = float64_reference(samples.reshape(args.num, -1)[torch.from_numpy(pick).cuda()], train.reshape(args.num, -1))
    same_idx = bool((ri == idx[pick]).all())
    rel = float(np.max(np.abs(dist[pick] - rd) / np.maximum(rd, 1e-12)))
    write_result(args.out, f"nn-{args.num}x{args.num}", {
        "seconds": round(t.seconds, 3), "cdist_top2_baseline_seconds": round(tb.seconds, 3),
        "checked_queries": args.check, "indices_identical_to_float64": same_idx, "max_relative_distance_error": rel,
        "peak_memory_gib": peak})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=50000)
    ap.add_argument("--check", type=int, default=2000)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    main(ap.parse_args())
