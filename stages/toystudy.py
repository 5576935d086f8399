"""2D toy study: ideal versus trained flow fields, and the fraction of samples within eps of a training
point versus MLP width, number of training points and training steps (CPU, minutes).

    python -m stages.toystudy --spec results/specs/toystudy/toy.json --out study.parquet --flow flow.png --sweep sweep.png

spec: {"dataset": "gmm", "widths": [32, 128], "n_trains": [8, 128], "steps": [150, 300], "eps": 0.02,
       "num_samples": 500}
"""
from __future__ import annotations

from diffrepro.cli import load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="Parquet table")
    p.add_argument("--flow", required=True, help="PNG of the flow fields")
    p.add_argument("--sweep", required=True, help="PNG of the memorization sweep")
    args = p.parse_args(argv)

    import torch

    from diffrepro.ideal import IdealDenoiser
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.toy2d_study import plot_flow_fields, plot_memorization_sweep, toy_sweep

    spec = load_spec(args.spec, "toystudy", ["dataset", "widths", "n_trains", "steps", "eps", "num_samples"])
    res = toy_sweep(spec["dataset"], spec["widths"], spec["n_trains"], spec["steps"], eps=spec["eps"],
                    n_samples=spec["num_samples"])
    base_n, last = min(spec["n_trains"]), max(spec["steps"])
    train = torch.as_tensor(res.train_sets[base_n], dtype=torch.float64)
    models = {f"MLP width {w}, N={base_n}": res.models[(w, base_n, last)] for w in spec["widths"]
              if (w, base_n, last) in res.models}
    plot_flow_fields(IdealDenoiser(train), models, train, path=args.flow)
    plot_memorization_sweep(res.table, args.sweep, eps=spec["eps"])
    atomic_write_parquet(args.out, res.table)
    log.info("toy study: %d rows in %.0f s", len(res.table), res.runtime_s)


if __name__ == "__main__":
    main_guard(main)
