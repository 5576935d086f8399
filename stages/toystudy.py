"""2D toy study: ideal versus trained flow fields, and the fraction of samples within eps of a
training point versus MLP width, number of training points and training steps (CPU, minutes).

    python -m stages.toystudy --profile toy --out study.parquet --flow flow.png --sweep sweep.png
"""
from __future__ import annotations

from stages._common import add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--sweep", required=True)
    args = p.parse_args(argv)

    import torch

    from diffrepro.ideal import IdealDenoiser
    from diffrepro.io import atomic_write_parquet
    from diffrepro.metrics.toy2d_study import plot_flow_fields, plot_memorization_sweep, toy_sweep
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    spec = find_job(load_params(args.params), "toystudy", args.profile, args.params).spec
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
