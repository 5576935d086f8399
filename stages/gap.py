"""Per-noise-level generalization gap of one training checkpoint: unweighted denoising MSE on the training
subset and on held-out data, on a fixed sigma grid with fixed noise draws (identical for both sets and for
every checkpoint), gap = held-out minus training.

    python -m stages.gap --spec results/specs/gap/<run>__step<k>.json \
        --model results/runs/<run>/snapshots/step-<k>.pt --data results/data/<subset> --out gap.parquet

spec: {"run": "<run>", "step": 100, "sigmas": 12, "n_per_set": 500, "seed": 0}
"""
from __future__ import annotations

from diffrepro.cli import add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="the checkpoint's model file (a run's snapshots/step-*.pt)")
    p.add_argument("--data", required=True, help="the run's prepared dataset folder")
    p.add_argument("--out", required=True, help="Parquet table")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.generalization import denoising_errors, sigma_grid, summarize_gap
    from diffrepro.models import load_model

    spec = load_spec(args.spec, "gap", ["sigmas", "n_per_set", "seed"])
    device = pick_device(args.device)
    D, rec = load_model(args.model, device)
    step = spec.get("step", rec.get("steps"))
    ds = load_dataset(args.data)
    df = denoising_errors(D, ds.train_float(), ds.heldout_float(), sigma_grid(spec["sigmas"]),
                          n_per_set=spec["n_per_set"], seed=spec["seed"], device=device)
    df["step"], df["run"] = step, spec.get("run", rec["spec"].get("run"))
    s = summarize_gap(df)
    log.info("step %d: gap peaks at sigma %.3g (%.4g), interior=%s", step, float(s["peak_sigma"].iloc[0]),
             float(s["peak_gap"].iloc[0]), bool(s["peak_interior"].iloc[0]))
    atomic_write_parquet(args.out, df)


if __name__ == "__main__":
    main_guard(main)
