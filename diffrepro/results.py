"""The results table: every measurement of a profile as one tidy table (one row per run x evaluation x
metric x step), collected from the stages' outputs, with provenance columns. Reports, figures and the
claims table are drawn from it alone, so committed tables regenerate reports without retraining.

`collect(manifest)` builds it from a manifest (the aggregate stage's spec, written by the planner): the
runs with their specs, the evaluations and the analyses, each with the paths of its outputs. Nothing here
knows how paths are named. docs/results.md describes the columns.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd

# column: what it holds (the order is the table's)
COLUMNS = {
    "run": "training run (dataset subset x method x training setting x seed)",
    "eval": "evaluation: a run sampled with one sampler setting",
    "dataset": "dataset entry of params.yaml (datasets.<name>)",
    "n_train": "training-subset size N",
    "method": "method entry of params.yaml (methods.<name>)",
    "precond": "preconditioning: edm, vp or ve",
    "training": "training setting (training.<name>)",
    "network": "network preset",
    "seed": "training seed",
    "sampling": "sampler setting (sampling.<name>)",
    "sampler": "euler, heun or stochastic",
    "num_steps": "sampler steps",
    "nfe": "network evaluations per sample",
    "num_samples": "samples behind the value (FID, memorization)",
    "metric": "what `value` measures (see docs/results.md)",
    "value": "the measurement",
    "step": "training step the value belongs to",
    "nimg": "training images seen at `step`",
    "sigma_bin": "noise-level bin of per-sigma training losses",
    "sigma": "noise level",
    "ref_batch": "STF reference-batch size |R| (the run's method, or the target-variance analysis)",
    "sigma_dist": "training noise distribution: lognormal, vp, loguniform, infonoise",
    "mask_ratio": "fraction of pixels dropped from the loss (sparse supervision)",
    "target": "training target: none or stf",
    "analysis": "the analysis a row comes from (kind/key) when it is not an evaluation",
    "reference": "the reference sampler a distance (rmse_to_reference) is measured against",
}
PROVENANCE = ["git_commit", "params_hash", "dataset_sha256", "device", "torch", "wall_time_s"]
INTEGER_COLUMNS = ["n_train", "seed", "num_steps", "nfe", "num_samples", "step", "nimg", "sigma_bin", "ref_batch",
                   "fid_ref_count", "toy_n", "toy_width"]
DEFAULT_SIGMA_DIST = {"edm": "lognormal", "vp": "vp", "ve": "loguniform"}


class MissingResult(FileNotFoundError):
    """An output the manifest lists does not exist (run the pipeline first, or allow missing ones)."""


def run_columns(run: str, spec: dict) -> dict:
    """Columns describing a run, from its training spec."""
    m, ds, tr = spec["method"], spec["dataset"], spec["training"]
    return {"run": run, "dataset": ds.get("entry", ds.get("key")), "n_train": ds["n_train"], "method": m["name"],
            "precond": m["precond"],
            "sigma_dist": (m.get("sigma_dist") or {"kind": DEFAULT_SIGMA_DIST[m["precond"]]})["kind"],
            "mask_ratio": float((m.get("mask") or {}).get("ratio", 0.0)),
            "target": (m.get("target") or {}).get("kind", "none"),
            "ref_batch": (m.get("target") or {}).get("ref_batch"),
            "training": tr["name"], "network": tr["network"], "seed": spec["seed"]}


class _Reader:
    def __init__(self, allow_missing: bool):
        self.allow_missing, self.skipped = allow_missing, []

    def exists(self, path) -> bool:
        if path and Path(path).exists():
            return True
        if not self.allow_missing:
            raise MissingResult(f"{path} is missing: run the pipeline first (or aggregate with --allow-missing)")
        self.skipped.append(str(path))
        return False


def _eval_rows(key: str, ev: dict, base: dict, final_step: int, rd: _Reader) -> List[dict]:
    cols = {**base, "eval": key, "sampling": ev["sampling"]["name"], "sampler": ev["sampling"]["sampler"],
            "num_steps": ev["sampling"]["num_steps"], "num_samples": ev["num_samples"], "step": final_step}
    rows = []
    if rd.exists(ev["info"]):
        info = json.loads(Path(ev["info"]).read_text())
        cols["nfe"] = info["nfe"]
        if info.get("sigma_range"):          # the schedule's sigma range after clamping to the trained range
            cols["sample_sigma_min"], cols["sample_sigma_max"] = info["sigma_range"]
        rows.append({**cols, "metric": "sample_time_s", "value": info["wall_time_s"]})
    if ev.get("fid") and rd.exists(ev["fid"]):
        fid = json.loads(Path(ev["fid"]).read_text())
        rows.append({**cols, "metric": "fid", "value": fid["fid"], "fid_ref": fid["ref"],
                     "fid_ref_count": fid["ref_count"], "fid_mode": fid["mode"]})
        if "fid_heldout" in fid:
            rows.append({**cols, "metric": "fid_heldout", "value": fid["fid_heldout"], "fid_ref": fid["heldout_ref"],
                         "fid_ref_count": fid["heldout_ref_count"], "fid_mode": fid["mode"]})
    if ev.get("rmse") and rd.exists(ev["rmse"]):
        rmse = json.loads(Path(ev["rmse"]).read_text())
        rows.append({**cols, "metric": "rmse_to_reference", "value": rmse["rmse_mean"],
                     "reference": rmse["reference"]})
    if ev.get("memorize") and rd.exists(ev["memorize"]):
        mem = json.loads(Path(ev["memorize"]).read_text())
        for name in ("fraction_memorized", "median_ratio", "mean_d1"):
            if name in mem:
                rows.append({**cols, "metric": f"mem_{name}", "value": mem[name]})
    return rows


def _analysis_frame(a: dict, with_run) -> pd.DataFrame | None:
    kind, path = a["kind"], a["path"]
    tag = f"{kind}/{a['key']}"
    if kind == "targetvar":
        t = pd.read_parquet(path)
        rows = [t[["sigma", "ref_batch", col]].rename(columns={col: "value"}).assign(metric=metric)
                for metric, col in (("stf_target_trace", "trace"), ("stf_trace_ratio", "ratio"),
                                    ("stf_trace_ratio_se", "ratio_stderr")) if col in t]
        r = pd.concat(rows, ignore_index=True)
        ds = a["dataset"]
        r["dataset"], r["n_train"], r["analysis"] = ds.get("entry", ds.get("key")), ds["n_train"], tag
        return r
    if kind == "gap":
        g = pd.read_parquet(path)
        rows = [g[["sigma", "step"]].assign(metric=m, value=g[m]) for m in ("gap", "mse_train", "mse_heldout", "se_gap")]
        return with_run(pd.concat(rows, ignore_index=True), a["run"]).assign(analysis=tag)
    if kind == "memtrace":
        m = json.loads(Path(path).read_text())
        rows = [{"metric": metric, "value": m[k], "step": m["step"]}
                for metric, k in (("mem_fraction_ckpt", "fraction_memorized"), ("mem_median_ratio_ckpt", "median_ratio"))]
        if "fid" in m:
            rows.append({"metric": "fid_ckpt", "value": m["fid"], "step": m["step"], "num_samples": m["fid_samples"],
                         "fid_ref_count": m["fid_ref_count"], **({"fid_mode": m["fid_mode"]} if "fid_mode" in m else {})})
        return with_run(pd.DataFrame(rows), a["run"])
    if kind == "trajectory":
        t = pd.read_parquet(path)
        rows = [t[["sigma"]].assign(metric=f"traj_{c.replace('_median', '')}", value=t[c])
                for c in ("r_traj_median", "r_train_median", "e_traj", "e_train", "w_max_traj", "w_max_train",
                          "n_eff_traj", "n_eff_train") if c in t]
        return with_run(pd.concat(rows, ignore_index=True), a["run"]).assign(analysis=tag)
    if kind == "toystudy":
        t = pd.read_parquet(path)
        rows = [t.assign(metric=f"toy_{c}", value=t[c]) for c in ("fraction", "fraction_gu", "excess",
                                                                  "fraction_gu_chance", "fraction_gu_corrected") if c in t]
        r = pd.concat(rows, ignore_index=True).rename(columns={"n_train": "toy_n", "width": "toy_width"})
        r = r[["metric", "value", "factor", "model", "toy_width", "toy_n", "step", "eps"]].copy()
        r["dataset"], r["analysis"] = f"toy-{a['toy']}", tag
        return r
    raise ValueError(f"unknown analysis kind {kind!r} in the manifest")


def collect(manifest: dict, allow_missing: bool = False) -> Tuple[pd.DataFrame, List[str]]:
    """(the tidy table, outputs skipped because missing) of a manifest's runs, evaluations and analyses."""
    rd = _Reader(allow_missing)
    frames, extra, provenance, base_of = [], [], {}, {}
    final_step = {}
    for run, r in manifest["runs"].items():
        base = base_of[run] = run_columns(run, r["spec"])
        if not rd.exists(r["metrics"]):
            continue
        tm = pd.read_parquet(r["metrics"])
        prov = provenance[run] = {c: tm[c].iloc[0] for c in PROVENANCE if c in tm.columns}
        final_step[run] = int(tm["step"].max()) if len(tm) else 0
        t = tm[["step", "nimg", "metric", "value", "sigma_bin", "sigma"]].copy()
        for k, v in {**base, **prov}.items():
            t[k] = v
        frames.append(t)
    for key, ev in manifest["evals"].items():
        run = ev["run"]
        if run in final_step:
            extra.extend({**row, **provenance[run]} for row in _eval_rows(key, ev, base_of[run], final_step[run], rd))

    def with_run(frame, run):
        for k, v in {**base_of[run], **provenance.get(run, {})}.items():
            frame[k] = v
        return frame

    for a in manifest.get("analyses", []):
        if rd.exists(a["path"]):
            frames.append(_analysis_frame(a, with_run))
    df = pd.concat([f for f in frames if f is not None] + [pd.DataFrame(extra)], ignore_index=True)
    return conform(df), rd.skipped


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Column order of COLUMNS first; counts, steps and seeds as integers (nullable), so that they print
    as 300, not 300.0."""
    df = df.copy()
    for c in INTEGER_COLUMNS:
        if c in df.columns and df[c].dtype.kind in "fiu":
            values = df[c].dropna()
            if (values == values.round()).all():
                df[c] = df[c].astype("Int64")
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    return df[cols]


def curves(df: pd.DataFrame) -> Dict[str, Dict[str, pd.DataFrame]]:
    """Per-run curves for plotting tools (DVC plots): training loss and FID over training steps."""
    out = {"loss": {}, "fid": {}}
    loss = df[df["metric"] == "train_loss"]
    for run, g in loss.groupby("run"):
        out["loss"][run] = g.sort_values("step")[["step", "value"]].rename(columns={"value": "loss"})
    fid = df[df["metric"] == "fid_ckpt"]
    for run, g in fid.groupby("run"):
        out["fid"][run] = g.sort_values("step")[["step", "value"]].rename(columns={"value": "fid"})
    return out
