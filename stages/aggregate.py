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
ALLOW_MISSING = {"on": False, "skipped": []}


def exists(path) -> bool:
    """True if `path` exists; a missing file is an error unless --allow-missing (then it is skipped)."""
    if Path(path).exists():
        return True
    if not ALLOW_MISSING["on"]:
        raise FileNotFoundError(f"{path} is missing: run the pipeline first (or pass --allow-missing)")
    ALLOW_MISSING["skipped"].append(str(path))
    return False


def run_columns(key: str, spec: dict) -> dict:
    m = spec["method"]
    return {"run": key, "dataset": spec["dataset"]["key"], "n_train": spec["dataset"]["n_train"],
            "method": m["name"], "precond": m["precond"],
            "sigma_dist": (m.get("sigma_dist") or {"kind": {"edm": "lognormal", "vp": "vp", "ve": "loguniform"}[m["precond"]]})["kind"],
            "mask_ratio": float((m.get("mask") or {}).get("ratio", 0.0)),
            "target": (m.get("target") or {}).get("kind", "none"),
            "ref_batch": (m.get("target") or {}).get("ref_batch"),
            "training": spec["training"]["name"], "network": spec["training"]["network"], "seed": spec["seed"]}


def eval_rows(ekey: str, espec: dict, base: dict, final_step: int) -> list[dict]:
    """Rows from an evaluation folder: sampling info, FID, memorization summaries."""
    from diffrepro.pipeline.grid import paths

    rows = []
    cols = {**base, "eval": ekey, "sampling": espec["sampling"]["name"], "sampler": espec["sampling"]["sampler"],
            "num_steps": espec["sampling"]["num_steps"], "num_samples": espec["num_samples"], "step": final_step}
    info_path = Path(paths.sample_info(ekey))
    if exists(info_path):
        info = json.loads(info_path.read_text())
        cols["nfe"] = info["nfe"]
        if info.get("sigma_range"):          # the schedule's sigma range after clamping to the trained range
            cols["sample_sigma_min"], cols["sample_sigma_max"] = info["sigma_range"]
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


def analysis_frames(plan, run_provenance: dict) -> list[pd.DataFrame]:
    """Analyses as tidy rows: per dataset (STF target variance), per run or checkpoint (generalization
    gap, memorization over training, trajectories; with the run's provenance), per profile (2D toy study)."""
    from diffrepro.pipeline.grid import paths

    out = []
    for dkey, job in plan["targetvar"].items():
        if not exists(paths.targetvar(dkey)):
            continue
        t = pd.read_parquet(paths.targetvar(dkey))
        dspec = plan["prepare"][dkey].spec
        rows = []
        for metric, col in (("stf_target_trace", "trace"), ("stf_trace_ratio", "ratio"),
                            ("stf_trace_ratio_se", "ratio_stderr")):
            r = t[["sigma", "ref_batch", col]].rename(columns={col: "value"})
            r["metric"] = metric
            rows.append(r)
        r = pd.concat(rows, ignore_index=True)
        r["dataset"], r["n_train"], r["analysis"] = dspec["key"], dspec["n_train"], f"targetvar/{dkey}"
        out.append(r)

    def with_run(frame, rkey):
        for k, v in {**run_columns(rkey, plan["train"][rkey].spec), **run_provenance.get(rkey, {})}.items():
            frame[k] = v
        return frame

    for akey, job in plan["gap"].items():
        if not exists(paths.gap(akey)):
            continue
        g = pd.read_parquet(paths.gap(akey))
        rows = [g[["sigma", "step"]].assign(metric=m, value=g[m]) for m in ("gap", "mse_train", "mse_heldout", "se_gap")]
        out.append(with_run(pd.concat(rows, ignore_index=True), job.spec["run"]).assign(analysis=f"gap/{akey}"))
    mem = []
    for akey, job in plan["memtrace"].items():
        if not exists(paths.memtrace(akey)):
            continue
        m = json.loads(Path(paths.memtrace(akey)).read_text())
        for metric, key in (("mem_fraction_ckpt", "fraction_memorized"), ("mem_median_ratio_ckpt", "median_ratio")):
            mem.append(with_run(pd.DataFrame([{"metric": metric, "value": m[key], "step": m["step"]}]), job.spec["run"]))
        if "fid" in m:
            mem.append(with_run(pd.DataFrame([{"metric": "fid_ckpt", "value": m["fid"], "step": m["step"],
                                               "num_samples": m["fid_samples"], "fid_ref_count": m["fid_ref_count"]}]),
                                job.spec["run"]))
    out.extend(mem)
    for rkey, job in plan["trajectory"].items():
        if not exists(paths.trajectory(rkey)):
            continue
        t = pd.read_parquet(paths.trajectory(rkey))
        rows = [t[["sigma"]].assign(metric=f"traj_{c.replace('_median', '')}", value=t[c])
                for c in ("r_traj_median", "r_train_median", "e_traj", "e_train", "w_max_traj", "w_max_train",
                          "n_eff_traj", "n_eff_train") if c in t]
        out.append(with_run(pd.concat(rows, ignore_index=True), rkey).assign(analysis=f"trajectory/{rkey}"))
    for key, job in plan["toystudy"].items():
        if not exists(paths.toystudy(key)):
            continue
        t = pd.read_parquet(paths.toystudy(key))
        rows = [t.assign(metric=f"toy_{c}", value=t[c]) for c in ("fraction", "fraction_gu", "excess",
                                                                  "fraction_gu_chance", "fraction_gu_corrected") if c in t]
        r = pd.concat(rows, ignore_index=True).rename(columns={"n_train": "toy_n", "width": "toy_width"})
        r = r[["metric", "value", "factor", "model", "toy_width", "toy_n", "step", "eps"]].copy()
        r["dataset"], r["analysis"] = f"toy-{job.spec['dataset']}", f"toystudy/{key}"
        out.append(r)
    return out


def collect(plan) -> pd.DataFrame:
    from diffrepro.pipeline.grid import paths

    frames, extra, provenance = [], [], {}
    for rkey, job in plan["train"].items():
        base = run_columns(rkey, job.spec)
        if not exists(paths.train_metrics(rkey)):
            continue
        tm = pd.read_parquet(paths.train_metrics(rkey))
        prov = provenance[rkey] = {c: tm[c].iloc[0] for c in PROVENANCE if c in tm.columns}
        final_step = int(tm["step"].max()) if len(tm) else 0
        t = tm[["step", "nimg", "metric", "value", "sigma_bin", "sigma"]].copy()
        for k, v in {**base, **prov}.items():
            t[k] = v
        frames.append(t)
        for ekey, ejob in plan["sample"].items():
            if ejob.spec["run"] == rkey:
                extra.extend({**r, **prov} for r in eval_rows(ekey, ejob.spec, base, final_step))
    frames.extend(analysis_frames(plan, provenance))
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
    p.add_argument("--allow-missing", action="store_true",
                   help="skip outputs that do not exist (a partial grid); they are listed in the log")
    args = p.parse_args(argv)
    ALLOW_MISSING["on"] = args.allow_missing

    from diffrepro.io import atomic_write_parquet
    from diffrepro.pipeline.grid import plan
    from diffrepro.pipeline.params import load_params

    pl = plan(load_params(args.params), args.profile, args.params)
    df = collect(pl)
    atomic_write_parquet(args.out, df)
    log.info("%d rows from %d runs and %d evaluations -> %s", len(df), len(pl["train"]), len(pl["sample"]), args.out)
    if ALLOW_MISSING["skipped"]:
        log.warning("skipped %d missing outputs, e.g. %s", len(ALLOW_MISSING["skipped"]), ALLOW_MISSING["skipped"][0])


if __name__ == "__main__":
    main_guard(main)
