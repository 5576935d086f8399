"""Memorization of one training checkpoint (Gu et al. nearest-neighbour criterion): samples drawn from
the checkpoint's EMA weights with the EDM Heun sampler, compared with the training subset; with
--ref, also the FID of the same samples (FID over training, comparable only at equal sample counts).

    python -m stages.memtrace --job <run>__step<k> --model results/runs/<run>/model.pt --data results/data/<d> --out mem.json
"""
from __future__ import annotations

import numpy as np

from stages._common import add_checkpoint_job, add_device, add_params, load_checkpoint_job, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    add_checkpoint_job(p)
    p.add_argument("--out", required=True, help="JSON summary")
    p.add_argument("--ref", default=None, help="FID reference statistics (.npz): also report the samples' FID")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.memorization import memorization_scores
    from stages.sample import draw

    spec, device, D, rec = load_checkpoint_job(args, "memtrace")
    n = spec["num_samples"]
    samples, _ = draw(D, tuple(rec["data_shape"]), n, {"sampler": "heun", "num_steps": 18}, device,
                      batch_size=min(n, 500), progress=False)
    train = load_dataset(args.data).train
    scores = memorization_scores(samples, train, device=device)
    out = {**scores.summary(), "step": spec["step"], "run": spec["run"], "median_ratio": float(np.median(scores.ratio))}
    log.info("step %d: %d of %d samples memorized", spec["step"], scores.count, scores.n_samples)
    if args.ref:
        from diffrepro.metrics.fid import fid_from_arrays, load_statistics

        ref = load_statistics(args.ref)
        out.update(fid=fid_from_arrays(samples, ref, device=device, progress=False), fid_ref_count=ref.n,
                   fid_samples=len(samples))
        log.info("step %d: FID %.4f (%d samples vs %d reference images)", spec["step"], out["fid"], len(samples), ref.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
