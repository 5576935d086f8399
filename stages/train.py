"""Train one method variant on one dataset subset.

    python -m stages.train --run <run-key> --data results/data/<dataset> --out results/runs/<run-key>

Checkpoints go to <out>/ckpt every `checkpoint_every` steps; rerunning after a crash or kill resumes
from the last one (bit-identical to an uninterrupted run). Writes <out>/model.pt (EMA weights + config)
and <out>/train_metrics.parquet (loss, lr, per-sigma-bin losses) atomically, at the end.
"""
from __future__ import annotations

import math
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import torch

from stages._common import add_device, add_params, log, main_guard, parser


def train_config(training: dict, seed: int, fp32: bool):
    from diffrepro.training import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in training.items() if k in names}
    if fp32:  # debugging fallback: plain fp32, the plain network, no compilation
        kw.update(precision="fp32", fast=False)
    return TrainConfig(seed=seed, **kw)


def metrics_frame(rows, cfg, run_key: str, provenance: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["step", "nimg", "metric", "value", "sigma_bin"])
    lo, hi = math.log(cfg.sigma_bin_range[0]), math.log(cfg.sigma_bin_range[1])
    width = (hi - lo) / cfg.sigma_bins
    df["sigma"] = [math.exp(lo + (b + 0.5) * width) if b >= 0 else float("nan") for b in df["sigma_bin"]]
    df["run"] = run_key
    for k, v in provenance.items():
        df[k] = v
    return df


def sigma_dist_rows(sigma_dist) -> list[dict]:
    """An adaptive sigma distribution's profile snapshots (InfoNoise) as tidy metric rows."""
    if not hasattr(sigma_dist, "history"):
        return []
    rows = []
    for snap in sigma_dist.history() + [sigma_dist.profile_snapshot()]:
        step = int(snap["step"])
        if step < 0:
            continue
        for name in ("q", "rho", "pi"):
            for i, (ln_s, v) in enumerate(zip(snap["ln_sigma"], snap[name])):
                rows.append(dict(step=step, nimg=-1, metric=f"infonoise_{name}", value=float(v), sigma_bin=i,
                                 sigma=math.exp(float(ln_s))))
    return rows


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--job", required=True, help="run key (from the workflow plan)")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument("--out", required=True, help="run folder")
    add_device(p)
    p.add_argument("--fp32", action="store_true", help="plain fp32, no torch.compile (debugging)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_parquet
    from diffrepro.methods import build_objective
    from diffrepro.models import build_denoiser, network_config, save_model
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params
    from diffrepro.provenance import environment
    from diffrepro.training import Trainer

    from diffrepro import distributed

    params = load_params(args.params)
    spec = find_job(params, "train", args.job, args.params).spec
    # under torchrun: one process per GPU (or CPU processes with gloo); batch_size is the global batch
    device = distributed.init_from_env() if distributed.launched() else pick_device(args.device)
    main_rank = distributed.is_main()
    ds = load_dataset(args.data)
    data = ds.train_float()
    out = Path(args.out)
    if main_rank:      # a killed earlier attempt may have left a temporary between write and rename
        from diffrepro.io import remove_stale_temporaries
        for p in remove_stale_temporaries(out):
            log.info("removed %s, left by an interrupted write", p)

    training, method, seed = spec["training"], spec["method"], spec["seed"]
    cfg = train_config(training, seed, args.fp32)
    net_cfg = network_config(training, tuple(data.shape[1:]))
    torch.manual_seed(seed)  # initial weights depend on the seed only
    denoiser = build_denoiser(net_cfg, method["precond"])
    objective = build_objective(method, data.to(device), total_steps=cfg.steps, precond=denoiser)
    trainer = Trainer(denoiser, objective, data, cfg, ckpt_dir=out / "ckpt", device=device,
                      progress=not args.no_progress and main_rank)
    n_params = sum(p.numel() for p in denoiser.parameters())
    log.info("run %s: %s, %s preconditioning, %s parameters on %s (%d process%s)", args.job, training["network"],
             method["precond"], f"{n_params:,}", device, trainer.world, "es" if trainer.world > 1 else "")
    if trainer.try_resume():
        log.info("resuming from checkpoint at step %d of %d", trainer.state.step, cfg.steps)
    t0 = time.time()
    state = trainer.run()
    log.info("trained %d steps (%d images) in %.1f s this session", state.step, state.nimg, time.time() - t0)

    if not main_rank:
        return
    env = environment(device)
    provenance = {**env, "params_hash": args.job.rsplit("_", 1)[-1], "dataset_sha256": ds.manifest.get("sha256", {}).get("train.npy", ""),
                  "seed": seed, "wall_time_s": state.wall_s, "n_params": n_params, "processes": trainer.world}
    snapshots = sorted(str(p.relative_to(out)) for p in (out / "ckpt" / "snapshots").glob("step-*.pt"))
    frame = metrics_frame(state.metrics, cfg, args.job, provenance)
    extra = sigma_dist_rows(objective.sigma_dist)
    if extra:
        extra = pd.DataFrame(extra).drop_duplicates(["step", "metric", "sigma_bin"], keep="last")
        for k, v in {"run": args.job, **provenance}.items():
            extra[k] = v
        frame = pd.concat([frame, extra], ignore_index=True)
    atomic_write_parquet(out / "train_metrics.parquet", frame)
    save_model(out / "model.pt", ema_state=trainer.ema.state_dict(), net_cfg=net_cfg, precond=method["precond"],
               spec=spec, extra={"provenance": provenance, "snapshots": snapshots, "steps": state.step,
                                 "nimg": state.nimg, "sigma_dist": objective.sigma_dist.state_dict(),
                                 "data_shape": list(data.shape[1:])})


if __name__ == "__main__":
    main_guard(main)
