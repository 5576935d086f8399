"""Collect every run's metrics of a profile into one tidy Parquet table (one row per
run x evaluation x metric x step), with provenance columns.

    python -m stages.aggregate --profile smoke --out reports/smoke/metrics.parquet
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from stages._common import add_params, log, main_guard, parser

PROVENANCE = ["git_commit", "params_hash", "dataset_sha256", "device", "torch", "wall_time_s"]


def run_columns(key: str, spec: dict) -> dict:
    m = spec["method"]
    return {"run": key, "dataset": spec["dataset"]["key"], "n_train": spec["dataset"]["n_train"],
            "method": m["name"], "precond": m["precond"],
            "sigma_dist": (m.get("sigma_dist") or {"kind": {"edm": "lognormal", "vp": "vp", "ve": "loguniform"}[m["precond"]]})["kind"],
            "mask_ratio": float((m.get("mask") or {}).get("ratio", 0.0)),
            "target": (m.get("target") or {}).get("kind", "none"),
            "training": spec["training"]["name"], "network": spec["training"]["network"], "seed": spec["seed"]}


def eval_rows(ekey: str, espec: dict, base: dict, final_step: int) -> list[dict]:
    """Rows from an evaluation folder: sampling info, FID, memorization summaries."""
    from diffrepro.pipeline.grid import paths

    rows = []
    cols = {**base, "eval": ekey, "sampling": espec["sampling"]["name"], "sampler": espec["sampling"]["sampler"],
            "num_steps": espec["sampling"]["num_steps"], "num_samples": espec["num_samples"], "step": final_step}
    info_path = Path(paths.sample_info(ekey))
    if info_path.exists():
        info = json.loads(info_path.read_text())
        cols["nfe"] = info["nfe"]
        rows.append({**cols, "metric": "sample_time_s", "value": info["wall_time_s"]})
    fid_path = Path(paths.fid(ekey))
    if fid_path.exists():
        fid = json.loads(fid_path.read_text())
        rows.append({**cols, "metric": "fid", "value": fid["fid"], "fid_ref": fid["ref"],
                     "fid_ref_count": fid["ref_count"], "fid_mode": fid["mode"]})
    mem_path = Path(paths.memorize(ekey))
    if mem_path.exists():
        mem = json.loads(mem_path.read_text())
        for name in ("fraction_memorized", "median_ratio", "mean_d1"):
            if name in mem:
                rows.append({**cols, "metric": f"mem_{name}", "value": mem[name]})
    return rows


def analysis_frames(plan) -> list[pd.DataFrame]:
    """Per-dataset analyses (STF target variance) as tidy rows."""
    from diffrepro.pipeline.grid import paths

    out = []
    for dkey, job in plan["targetvar"].items():
        t = pd.read_parquet(paths.targetvar(dkey))
        dspec = plan["prepare"][dkey].spec
        rows = []
        for metric, col in (("stf_target_trace", "trace"), ("stf_trace_ratio", "ratio")):
            r = t[["sigma", "ref_batch", col]].rename(columns={col: "value"})
            r["metric"] = metric
            rows.append(r)
        r = pd.concat(rows, ignore_index=True)
        r["dataset"], r["n_train"], r["analysis"] = dspec["key"], dspec["n_train"], f"targetvar/{dkey}"
        out.append(r)
    return out


def collect(plan) -> pd.DataFrame:
    from diffrepro.pipeline.grid import paths

    frames, extra = [], []
    for rkey, job in plan["train"].items():
        base = run_columns(rkey, job.spec)
        tm = pd.read_parquet(paths.train_metrics(rkey))
        prov = {c: tm[c].iloc[0] for c in PROVENANCE if c in tm.columns}
        final_step = int(tm["step"].max()) if len(tm) else 0
        t = tm[["step", "nimg", "metric", "value", "sigma_bin", "sigma"]].copy()
        for k, v in {**base, **prov}.items():
            t[k] = v
        frames.append(t)
        for ekey, ejob in plan["sample"].items():
            if ejob.spec["run"] == rkey:
                extra.extend({**r, **prov} for r in eval_rows(ekey, ejob.spec, base, final_step))
    frames.extend(analysis_frames(plan))
    df = pd.concat(frames + [pd.DataFrame(extra)], ignore_index=True)
    first = ["run", "eval", "dataset", "n_train", "method", "precond", "training", "network", "seed", "sampling",
             "sampler", "num_steps", "nfe", "num_samples", "metric", "value", "step", "nimg", "sigma_bin", "sigma",
             "ref_batch"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols]


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--profile", required=True)
    p.add_argument("--out", required=True, help="Parquet file")
    args = p.parse_args(argv)

    from diffrepro.io import atomic_write_parquet
    from diffrepro.pipeline.grid import plan
    from diffrepro.pipeline.params import load_params

    pl = plan(load_params(args.params), args.profile, args.params)
    df = collect(pl)
    atomic_write_parquet(args.out, df)
    log.info("%d rows from %d runs and %d evaluations -> %s", len(df), len(pl["train"]), len(pl["sample"]), args.out)


if __name__ == "__main__":
    main_guard(main)
