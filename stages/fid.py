"""FID of generated samples against cached reference statistics (clean-fid `clean` mode).

    python -m stages.fid --spec results/specs/fid/<eval>.json --samples results/evals/<eval>/samples.npy \
        --ref results/fidref/<ref>.npz --out results/evals/<eval>/fid.json

spec: {"mode": "clean", "batch_size": 64}

The value depends on the number of samples and on the reference: both are written next to it.
"""
from __future__ import annotations

import time

import numpy as np

from diffrepro.cli import SpecError, add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy, uint8 NHWC")
    p.add_argument("--ref", required=True, help="reference statistics (.npz from stages.fidref)")
    p.add_argument("--out", required=True, help="JSON result")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.fid import feature_statistics, features_from_array, frechet_distance, load_statistics

    spec = load_spec(args.spec, "fid")
    ref = load_statistics(args.ref)
    mode = ref.meta.get("mode", "clean")
    if spec.get("mode", mode) != mode:
        raise SpecError(f"spec asks for FID mode {spec['mode']!r} but {args.ref} holds {mode!r} statistics")
    samples = np.load(args.samples)
    device = pick_device(args.device)
    t0 = time.time()
    feats = features_from_array(samples, device=device, batch_size=spec.get("batch_size", 64), progress=False)
    mu, sigma = feature_statistics(feats)
    value = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    out = {"fid": value, "n_samples": int(len(samples)), "ref": args.ref, "ref_count": ref.n, "mode": mode,
           "wall_time_s": time.time() - t0}
    log.info("FID %.4f (%d samples vs %d reference images, %s mode)", value, len(samples), ref.n, mode)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
