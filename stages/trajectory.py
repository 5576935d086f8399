"""Sampler trajectories against the training data (Kaiser & Kollmann): at each step, the distance to
the nearest training point relative to sigma*sqrt(d) and the error to the ideal denoiser of the
training subset, on trajectory points versus on noised training points at the same sigma.

    python -m stages.trajectory --job <run> --model results/runs/<run>/model.pt --data results/data/<d> --out t.parquet --figure t.png
"""
from __future__ import annotations

from stages._common import add_checkpoint_job, add_device, add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    add_checkpoint_job(p)
    p.add_argument("--out", required=True)
    p.add_argument("--figure", required=True)
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.trajectory import plot_trajectory, trajectory_statistics
    from diffrepro.models import load_model
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    spec = find_job(load_params(args.params), "trajectory", args.job, args.params).spec
    device = pick_device(args.device)
    D, _ = load_model(args.model, device)
    train = load_dataset(args.data).train_float()
    res = trajectory_statistics(D, train, n_samples=spec["num_samples"], device=device,
                                sampler_kwargs={"sampler": "heun", "num_steps": 18})
    df = res.steps.copy()
    df["run"] = spec["run"]
    df["model"] = spec["run"].split("_")[1]
    plot_trajectory(df, args.figure, title=spec["run"])
    atomic_write_parquet(args.out, df)
    mid = df[df["sigma"].between(0.1, 5)]
    log.info("0.1 <= sigma <= 5: median r_traj %.3f vs r_train %.3f; e_traj/e_train %.2f",
             mid["r_traj_median"].mean(), mid["r_train_median"].mean(), (mid["e_traj"] / mid["e_train"]).mean())


if __name__ == "__main__":
    main_guard(main)
