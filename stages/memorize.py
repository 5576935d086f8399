"""Memorization of generated samples (Gu et al. 2023): exact nearest and second-nearest training images in
pixel space; a sample is memorized when d1/d2 < threshold.

    python -m stages.memorize --spec results/specs/memorize/<eval>.json --samples results/evals/<eval>/samples.npy \
        --data results/data/<subset> --out memorize.json --table memorize.parquet --figure memorize.png

spec: {"threshold": 0.333}
"""
from __future__ import annotations

import time

import numpy as np

from diffrepro.cli import add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy (uint8 NHWC or float (N, 2))")
    p.add_argument("--data", required=True, help="prepared dataset folder (its training subset is the reference)")
    p.add_argument("--out", required=True, help="summary JSON")
    p.add_argument("--table", required=True, help="per-sample Parquet table")
    p.add_argument("--figure", required=True, help="PNG pairing the most memorized samples with their neighbours")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json, atomic_write_parquet
    from diffrepro.metrics.memorization import memorization_scores
    from diffrepro.metrics.memorization_plots import plot_memorized_pairs

    spec = load_spec(args.spec, "memorize", ["threshold"])
    threshold = spec["threshold"]
    samples = np.load(args.samples)
    train = load_dataset(args.data).train
    device = pick_device(args.device)
    t0 = time.time()
    scores = memorization_scores(samples, train, device=device, threshold=threshold)
    summary = {**scores.summary(), "median_ratio": float(np.median(scores.ratio)), "mean_d1": float(np.mean(scores.d1)),
               "threshold": threshold, "wall_time_s": time.time() - t0, "samples": args.samples, "data": args.data}
    log.info("%d of %d samples memorized (d1/d2 < %.3f); median ratio %.3f", scores.count, scores.n_samples,
             threshold, summary["median_ratio"])
    plot_memorized_pairs(samples, train, scores, args.figure)
    atomic_write_parquet(args.table, scores.to_frame())
    atomic_write_json(args.out, summary)


if __name__ == "__main__":
    main_guard(main)
