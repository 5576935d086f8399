"""Trace of the training target's covariance versus sigma on a real dataset subset: the baseline target
(the clean image) against Stable Target Field targets with several reference-batch sizes (STF claim T1,
the paper's variance figure).

    python -m stages.targetvar --spec results/specs/targetvar/fmnist-n300.json --data results/data/fmnist-n300 \
        --out tv.parquet --figure tv.png

spec: {"dataset": "fmnist-n300", "sigmas": [0.05, ..., 80.0], "ref_batches": [64, 256], "n_samples": 256, "seed": 0}
"""
from __future__ import annotations

from diffrepro.cli import load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="Parquet table")
    p.add_argument("--figure", required=True, help="PNG")
    args = p.parse_args(argv)

    import torch

    from diffrepro.data import load_dataset
    from diffrepro.io import atomic_write_parquet
    from diffrepro.methods.stf_analysis import plot_target_variance, target_covariance_trace

    spec = load_spec(args.spec, "targetvar", ["sigmas", "ref_batches", "n_samples"])
    name = spec.get("dataset", args.data)
    data = load_dataset(args.data).train_float()
    df = target_covariance_trace(data, spec["sigmas"], spec["ref_batches"], n_samples=spec["n_samples"],
                                 generator=torch.Generator().manual_seed(spec.get("seed", 0)))
    df["dataset"] = name
    plot_target_variance(df, args.figure, title=f"{name}: target variance, baseline vs STF")
    atomic_write_parquet(args.out, df)
    mid = df[(df["method"] != "baseline") & df["sigma"].between(0.5, 5)]
    log.info("STF / baseline target variance at 0.5 <= sigma <= 5: %s",
             ", ".join(f"|R|={r}: {g['ratio'].mean():.3f}" for r, g in mid.groupby("ref_batch")))


if __name__ == "__main__":
    main_guard(main)
