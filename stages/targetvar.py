"""Trace of the training target's covariance versus sigma on a real dataset subset: the baseline
target (the clean image) against Stable Target Field targets with several reference-batch sizes
(STF claim T1, the paper's variance figure).

    python -m stages.targetvar --dataset <dataset-key> --data results/data/<d> --out tv.parquet --figure tv.png
"""
from __future__ import annotations

from stages._common import add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--dataset", required=True, help="dataset key (from the workflow plan)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="Parquet table")
    p.add_argument("--figure", required=True, help="PNG")
    args = p.parse_args(argv)

    import torch

    from diffrepro.data import load_dataset
    from diffrepro.io import atomic_write_parquet
    from diffrepro.methods.stf_analysis import plot_target_variance, target_covariance_trace
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    spec = find_job(load_params(args.params), "targetvar", args.dataset, args.params).spec
    data = load_dataset(args.data).train_float()
    df = target_covariance_trace(data, spec["sigmas"], spec["ref_batches"], n_samples=spec["n_samples"],
                                 generator=torch.Generator().manual_seed(0))
    df["dataset"] = args.dataset
    plot_target_variance(df, args.figure, title=f"{args.dataset}: target variance, baseline vs STF")
    atomic_write_parquet(args.out, df)
    mid = df[(df["method"] != "baseline") & df["sigma"].between(0.5, 5)]
    log.info("STF / baseline target variance at 0.5 <= sigma <= 5: %s",
             ", ".join(f"|R|={r}: {g['ratio'].mean():.3f}" for r, g in mid.groupby("ref_batch")))


if __name__ == "__main__":
    main_guard(main)
