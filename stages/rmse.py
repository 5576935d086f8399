"""Per-sample RMSE of an evaluation's samples to the reference sampler's samples of the same run (claim E1):
both drew sample k from seed k, so the difference is the sampler's truncation error alone.

    python -m stages.rmse --spec results/specs/rmse/<eval>.json --samples results/evals/<eval>/samples.npy \
        --reference results/evals/<run>__heun-256/samples.npy --out results/evals/<eval>/rmse.json

spec: {"eval": "<run>__euler-32", "run": "<run>", "reference": "heun-256"}

Writes the mean, median and 90th percentile over samples of sqrt(mean over values of (x - x_ref)^2), on
the [-1, 1] scale (diffrepro.metrics.sampler_error).
"""
from __future__ import annotations

import numpy as np

from diffrepro.cli import SpecError, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy of the evaluation")
    p.add_argument("--reference", required=True, help="samples.npy of the reference sampler, same run")
    p.add_argument("--out", required=True, help="JSON result")
    args = p.parse_args(argv)

    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.sampler_error import per_sample_rmse

    spec = load_spec(args.spec, "rmse", ["reference"])
    samples, reference = np.load(args.samples), np.load(args.reference)
    if samples.shape != reference.shape:
        raise SpecError(f"{args.samples} holds {samples.shape} but the reference {args.reference} holds "
                        f"{reference.shape}: sample both with the same num_samples (sample k comes from seed k)")
    rmse = per_sample_rmse(samples, reference)
    out = {"eval": spec.get("eval"), "reference": spec["reference"], "n_samples": int(len(rmse)),
           "rmse_mean": float(rmse.mean()), "rmse_median": float(np.median(rmse)),
           "rmse_p90": float(np.quantile(rmse, 0.9))}
    log.info("RMSE to %s: mean %.4g, median %.4g over %d samples", spec["reference"], out["rmse_mean"],
             out["rmse_median"], len(rmse))
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
