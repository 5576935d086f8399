"""Memorization of one training checkpoint (Gu et al. nearest-neighbour criterion): samples drawn from the
checkpoint's EMA weights, compared with the training subset; with --ref, also the FID of the same samples
(FID over training, comparable only at equal sample counts).

    python -m stages.memtrace --spec results/specs/memtrace/<run>__step<k>.json \
        --model results/runs/<run>/snapshots/step-<k>.pt --data results/data/<subset> [--ref ref.npz] --out mem.json

spec: {"run": "<run>", "step": 100, "num_samples": 500, "sampling": {"sampler": "heun", "num_steps": 18},
       "batch_size": 500, "threshold": 0.333, "fid": {"mode": "clean", "batch_size": 64}}  (fid: null without --ref)
"""
from __future__ import annotations

import numpy as np

from diffrepro.cli import SpecError, add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="the checkpoint's model file (a run's snapshots/step-*.pt)")
    p.add_argument("--data", required=True, help="the run's prepared dataset folder")
    p.add_argument("--ref", default=None, help="FID reference statistics (.npz): also report the samples' FID")
    p.add_argument("--out", required=True, help="JSON summary")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.generate import draw_samples
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.memorization import memorization_scores
    from diffrepro.models import load_model

    spec = load_spec(args.spec, "memtrace", ["num_samples", "sampling", "threshold"])
    if args.ref and not spec.get("fid"):
        raise SpecError(f"--ref given but spec {args.spec} has no FID settings (\"fid\": {{\"mode\": ...}})")
    device = pick_device(args.device)
    D, rec = load_model(args.model, device)
    step, run = spec.get("step", rec.get("steps")), spec.get("run", rec["spec"].get("run"))
    n = spec["num_samples"]
    samples, _ = draw_samples(D, tuple(rec["data_shape"]), n, spec["sampling"], device,
                              batch_size=min(n, spec.get("batch_size", 500)))
    train = load_dataset(args.data).train
    scores = memorization_scores(samples, train, device=device, threshold=spec["threshold"])
    out = {**scores.summary(), "step": step, "run": run, "median_ratio": float(np.median(scores.ratio))}
    log.info("step %d: %d of %d samples memorized (d1/d2 < %.3f)", step, scores.count, scores.n_samples,
             spec["threshold"])
    if args.ref:
        from diffrepro.metrics.fid import check_reference, fid_from_arrays, load_statistics

        ref = load_statistics(args.ref)
        try:
            mode = check_reference(ref, spec["fid"].get("mode", "clean"), samples.shape[1:],
                                   f"reference statistics {args.ref}")
        except ValueError as exc:   # statistics that cannot be compared with these samples: say which and why
            raise SpecError(str(exc)) from None
        out.update(fid=fid_from_arrays(samples, ref, device=device, batch_size=spec["fid"].get("batch_size", 64),
                                       mode=mode, progress=False),
                   fid_mode=mode, fid_ref_count=ref.n, fid_samples=len(samples))
        log.info("step %d: FID %.4f (%s mode, %d samples vs %d reference images)", step, out["fid"], mode,
                 len(samples), ref.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
