"""Memorization of one training checkpoint (Gu et al. nearest-neighbour criterion): samples drawn from
the checkpoint's EMA weights with the EDM Heun sampler, compared with the training subset; with
--ref, also the FID of the same samples (FID over training, comparable only at equal sample counts).

    python -m stages.memtrace --job <run>__step<k> --model results/runs/<run>/model.pt --data results/data/<d> --out mem.json
"""
from __future__ import annotations

import numpy as np
import torch

from stages._common import add_checkpoint_job, add_device, add_params, log, main_guard, parser, snapshot_path


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    add_checkpoint_job(p)
    p.add_argument("--out", required=True, help="JSON summary")
    p.add_argument("--ref", default=None, help="FID reference statistics (.npz): also report the samples' FID")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.memorization import memorization_scores
    from diffrepro.models import load_model
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params
    from diffrepro.samplers import generate, to_uint8

    spec = find_job(load_params(args.params), "memtrace", args.job, args.params).spec
    device = pick_device(args.device)
    D, rec = load_model(args.model, device, snapshot=snapshot_path(args.model, spec["step"]))
    shape = tuple(rec["data_shape"])
    chunks = []
    for start in range(0, spec["num_samples"], 500):
        seeds = list(range(start, min(start + 500, spec["num_samples"])))
        with torch.no_grad():
            x = generate(D, shape, seeds, device=device, sampler="heun", num_steps=18).samples
        chunks.append(to_uint8(x) if len(shape) == 3 else x.float().cpu().numpy())
    samples = np.concatenate(chunks)
    train = load_dataset(args.data).train
    scores = memorization_scores(samples, train, device=device)
    out = {**scores.summary(), "step": spec["step"], "run": spec["run"], "median_ratio": float(np.median(scores.ratio))}
    log.info("step %d: %d of %d samples memorized", spec["step"], scores.count, scores.n_samples)
    if args.ref:
        from diffrepro.metrics.fid import feature_statistics, features_from_array, frechet_distance, load_statistics

        ref = load_statistics(args.ref)
        mu, sigma = feature_statistics(features_from_array(samples, device=device, progress=False))
        out.update(fid=frechet_distance(mu, sigma, ref.mu, ref.sigma), fid_ref_count=ref.n, fid_samples=len(samples))
        log.info("step %d: FID %.4f (%d samples vs %d reference images)", spec["step"], out["fid"], len(samples), ref.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
