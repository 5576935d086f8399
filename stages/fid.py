"""FID of generated samples against cached reference statistics (clean-fid `clean` mode).

    python -m stages.fid --samples results/evals/<e>/samples.npy --ref results/fidref/<r>.npz --out fid.json

The value depends on the number of samples and on the reference: both are written next to it.
"""
from __future__ import annotations

import time

import numpy as np

from stages._common import add_device, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy, uint8 NHWC")
    p.add_argument("--ref", required=True, help="reference statistics (.npz from stages.fidref)")
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--batch-size", type=int, default=64)
    add_device(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.fid import (feature_statistics, features_from_array, frechet_distance,
                                       load_statistics)

    ref = load_statistics(args.ref)
    samples = np.load(args.samples)
    device = pick_device(args.device)
    t0 = time.time()
    feats = features_from_array(samples, device=device, batch_size=args.batch_size, progress=not args.no_progress)
    mu, sigma = feature_statistics(feats)
    value = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    out = {"fid": value, "n_samples": int(len(samples)), "ref": args.ref, "ref_count": ref.n,
           "mode": ref.meta.get("mode", "clean"), "wall_time_s": time.time() - t0}
    log.info("FID %.4f (%d samples vs %d reference images, %s mode)", value, len(samples), ref.n, out["mode"])
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
