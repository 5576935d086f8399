"""Sampler trajectories against the training data (Kaiser & Kollmann): at each step, the distance to the
nearest training point relative to sigma*sqrt(d) and the error to the ideal denoiser of the training
subset, on trajectory points versus on noised training points at the same sigma.

    python -m stages.trajectory --spec results/specs/trajectory/<run>.json --model results/runs/<run>/model.pt \
        --data results/data/<subset> --out t.parquet --figure t.png

spec: {"run": "<run>", "num_samples": 128, "sampling": {"sampler": "heun", "num_steps": 18}}
"""
from __future__ import annotations

from diffrepro.cli import add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="model.pt of a run (stages.train)")
    p.add_argument("--data", required=True, help="the run's prepared dataset folder")
    p.add_argument("--out", required=True, help="Parquet table")
    p.add_argument("--figure", required=True, help="PNG")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.trajectory import plot_trajectory, trajectory_statistics
    from diffrepro.models import load_model

    spec = load_spec(args.spec, "trajectory", ["num_samples", "sampling"])
    device = pick_device(args.device)
    D, rec = load_model(args.model, device)
    run = spec.get("run", rec["spec"].get("run"))
    train = load_dataset(args.data).train_float()
    sampling = {k: v for k, v in spec["sampling"].items() if k != "name"}
    res = trajectory_statistics(D, train, n_samples=spec["num_samples"], device=device, sampler_kwargs=sampling)
    df = res.steps.copy()
    df["run"] = run
    df["model"] = rec["spec"]["method"]["name"]
    plot_trajectory(df, args.figure, title=run)
    atomic_write_parquet(args.out, df)
    mid = df[df["sigma"].between(0.1, 5)]
    log.info("0.1 <= sigma <= 5: median r_traj %.3f vs r_train %.3f; e_traj/e_train %.2f",
             mid["r_traj_median"].mean(), mid["r_train_median"].mean(), (mid["e_traj"] / mid["e_train"]).mean())


if __name__ == "__main__":
    main_guard(main)
