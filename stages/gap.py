"""Per-noise-level generalization gap of one training checkpoint: unweighted denoising MSE on the
training subset and on held-out data, on a fixed sigma grid with fixed noise draws (identical for
both sets and for every checkpoint), gap = held-out minus training.

    python -m stages.gap --job <run>__step<k> --model results/runs/<run>/model.pt --data results/data/<d> --out gap.parquet
"""
from __future__ import annotations

from stages._common import add_checkpoint_job, add_device, add_params, load_checkpoint_job, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    add_checkpoint_job(p)
    p.add_argument("--out", required=True, help="Parquet table")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.generalization import denoising_errors, sigma_grid, summarize_gap

    spec, device, D, _ = load_checkpoint_job(args, "gap")
    ds = load_dataset(args.data)
    df = denoising_errors(D, ds.train_float(), ds.heldout_float(), sigma_grid(spec["sigmas"]),
                          n_per_set=spec["n_per_set"], seed=spec["seed"], device=device)
    df["step"], df["run"] = spec["step"], spec["run"]
    s = summarize_gap(df)
    log.info("step %d: gap peaks at sigma %.3g (%.4g), interior=%s", spec["step"], float(s["peak_sigma"].iloc[0]),
             float(s["peak_gap"].iloc[0]), bool(s["peak_interior"].iloc[0]))
    atomic_write_parquet(args.out, df)


if __name__ == "__main__":
    main_guard(main)
