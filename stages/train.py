"""Train one method variant on one dataset subset.

    python -m stages.train --spec results/specs/train/<run>.json --data results/data/<subset> --out results/runs/<run>

spec: {"run": "<name>", "dataset": {...}, "method": {"name": "edm", "precond": "edm", ...},
       "training": {"name": "tiny-cpu", "network": "tiny", "steps": 200, "batch_size": 16, "lr": 0.002, ...},
       "seed": 0}   (method and training as in params.yaml's methods.<name> and training.<name>)

Writes <out>/model.pt (EMA weights + network config + the spec), <out>/train_metrics.parquet (loss, lr,
per-sigma-bin losses) and <out>/snapshots/step-XXXXXXXX.pt (the EMA weights at every checkpoint, each a
model file like model.pt), all atomically at the end. While it runs, <out>/ckpt holds the resume state
(every `checkpoint_every` steps): rerunning after a crash or kill resumes from it, bit-identical to an
uninterrupted run, unless the spec changed (then it starts over). A finished run removes it.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import fields
from pathlib import Path

import pandas as pd
import torch

from diffrepro.cli import add_device, load_spec, log, main_guard, params_hash, parser


def train_config(training: dict, seed: int, fp32: bool):
    from diffrepro.training import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kw = {k: v for k, v in training.items() if k in names}
    if fp32:  # debugging fallback: plain fp32, the plain network, no compilation
        kw.update(precision="fp32", fast=False)
    return TrainConfig(seed=seed, **kw)


def metrics_frame(rows, cfg, run: str, provenance: dict) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["step", "nimg", "metric", "value", "sigma_bin"])
    lo, hi = math.log(cfg.sigma_bin_range[0]), math.log(cfg.sigma_bin_range[1])
    width = (hi - lo) / cfg.sigma_bins
    df["sigma"] = [math.exp(lo + (b + 0.5) * width) if b >= 0 else float("nan") for b in df["sigma_bin"]]
    df["run"] = run
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


def fresh_checkpoints(ckpt: Path, spec_id: str) -> bool:
    """Keep <out>/ckpt only if it belongs to this spec (else delete it); True if a resume is possible."""
    tag = ckpt / "spec.json"
    if ckpt.exists():
        try:
            same = json.loads(tag.read_text()).get("params_hash") == spec_id
        except (OSError, ValueError):
            same = False
        if not same:
            log.info("removing %s: its checkpoints belong to other parameters", ckpt)
            shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    tag.write_text(json.dumps({"params_hash": spec_id}) + "\n")
    return (ckpt / "resume.pt").exists()


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--data", required=True, help="prepared dataset folder (stages.prepare)")
    p.add_argument("--out", required=True, help="run folder")
    add_device(p)
    p.add_argument("--fp32", action="store_true", help="plain fp32, no torch.compile (debugging)")
    args = p.parse_args(argv)

    from diffrepro import distributed
    from diffrepro.augment import training_hook
    from diffrepro.data import load_dataset
    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_parquet, remove_stale_temporaries
    from diffrepro.methods import build_objective
    from diffrepro.models import build_denoiser, network_config, save_model
    from diffrepro.provenance import environment
    from diffrepro.training import Trainer

    spec = load_spec(args.spec, "train", ["method", "training", "seed"])
    run = spec.get("run") or Path(args.out).name
    spec_id = params_hash(spec)
    # under torchrun: one process per GPU (or CPU processes with gloo); batch_size is the global batch
    device = distributed.init_from_env() if distributed.launched() else pick_device(args.device)
    main_rank = distributed.is_main()
    ds = load_dataset(args.data)
    data = ds.train_float()
    out = Path(args.out)
    ckpt = out / "ckpt"
    if main_rank:      # a killed earlier attempt may have left a temporary between write and rename
        for p_ in remove_stale_temporaries(out):
            log.info("removed %s, left by an interrupted write", p_)
        fresh_checkpoints(ckpt, spec_id)
    if distributed.launched():
        distributed.barrier()

    training, method, seed = spec["training"], spec["method"], spec["seed"]
    cfg = train_config(training, seed, args.fp32)
    net_cfg = network_config(training, tuple(data.shape[1:]))
    torch.manual_seed(seed)  # initial weights depend on the seed only
    denoiser = build_denoiser(net_cfg, method["precond"])
    augment = training_hook(training)       # EDM's non-leaking augmentation (training.<name>.augment)
    objective = build_objective(method, data.to(device), total_steps=cfg.steps, precond=denoiser, augment_fn=augment)
    trainer = Trainer(denoiser, objective, data, cfg, ckpt_dir=ckpt, device=device, progress=main_rank)
    n_params = sum(p_.numel() for p_ in denoiser.parameters())
    log.info("run %s: %s, %s preconditioning, %s parameters on %s (%d process%s); %d steps of batch %d%s",
             run, training["network"], method["precond"], f"{n_params:,}", device, trainer.world,
             "es" if trainer.world > 1 else "", cfg.steps, cfg.batch_size,
             f"; non-leaking augmentation p = {augment.p:g}" if augment else "")
    if trainer.try_resume():
        log.info("resuming from checkpoint at step %d of %d", trainer.state.step, cfg.steps)
    t0 = time.time()
    state = trainer.run()
    log.info("trained %d steps (%d images) in %.1f s this session", state.step, state.nimg, time.time() - t0)

    if not main_rank:
        return
    provenance = {**environment(device), "params_hash": spec_id,
                  "dataset_sha256": ds.manifest.get("sha256", {}).get("train.npy", ""), "seed": seed,
                  "wall_time_s": state.wall_s, "n_params": n_params, "processes": trainer.world}
    frame = metrics_frame(state.metrics, cfg, run, provenance)
    extra = sigma_dist_rows(objective.sigma_dist)
    if extra:
        extra = pd.DataFrame(extra).drop_duplicates(["step", "metric", "sigma_bin"], keep="last")
        for k, v in {"run": run, **provenance}.items():
            extra[k] = v
        frame = pd.concat([frame, extra], ignore_index=True)
    record = dict(net_cfg=net_cfg, precond=method["precond"], spec=spec)
    meta = {"provenance": provenance, "data_shape": list(data.shape[1:]),
            # the network's augmentation input (net_cfg's augment_dim) is drawn from with the label zeroed
            "augment": {"p": augment.p, "pipe": augment.pipe.to_dict()} if augment else None}
    snaps = sorted((ckpt / "snapshots").glob("step-*.pt"))
    if (out / "snapshots").exists():
        shutil.rmtree(out / "snapshots")
    for snap in snaps:          # every checkpoint's EMA weights, as model files the analyses load directly
        s = torch.load(snap, map_location="cpu", weights_only=False)
        save_model(out / "snapshots" / snap.name, ema_state=s["ema"], **record,
                   extra={**meta, "steps": s["step"], "nimg": s["nimg"]})
    atomic_write_parquet(out / "train_metrics.parquet", frame)
    save_model(out / "model.pt", ema_state=trainer.ema.state_dict(), **record,
               extra={**meta, "snapshots": [f"snapshots/{s.name}" for s in snaps], "steps": state.step,
                      "nimg": state.nimg, "sigma_dist": objective.sigma_dist.state_dict()})
    shutil.rmtree(ckpt)         # finished: a rerun (new code, say) starts over instead of resuming
    log.info("wrote %s", out / "model.pt")


if __name__ == "__main__":
    main_guard(main)
