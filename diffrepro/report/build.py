"""Assemble the report of one profile: tables, figures and the claims table."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, atomic_write_text
from ..results import conform
from .claims import NOT_RUN, budget_of, claims_table, ensure_columns, evaluate
from .findings import headline, what_we_found
from .doc import Doc
from .figures import FIGURES, fid_modes

HOW_TO_READ = (
    "Every number comes from the tidy table `metrics.parquet` next to this file (one row per run x "
    "evaluation x metric x step). Every FID names its mode: `clean` (clean-fid's protocol: PIL bicubic "
    "resize to 299x299, then Inception-v3 pool features) or `legacy_tensorflow` (the papers' protocol: the "
    "TensorFlow Inception graph's own resize); the two give different values for the same images. FID also "
    "depends on the number of samples and on the reference set, so compare only numbers of one mode with "
    "equal counts and references; a paper's FID (legacy_tensorflow, 50k samples against the training set) "
    "compares only with a number measured that way. Memorization follows Gu "
    "et al. (2023): a sample is memorized when its nearest training image is closer than a third of the "
    "distance to the second nearest (pixel L2). Numbers are seed means with a 95% interval in brackets "
    "(Student t with n - 1 degrees of freedom; n = seeds; no interval with one seed).")

VERDICT_RULE = (
    "How a row decides (methods.md section 6): each arm's seed mean and 95% t interval; the compared "
    "quantity (difference of means: Welch; ratio of means: bootstrap over seeds) with its 95% interval. "
    "*agrees* when that interval lies on the paper's side, *disagrees* when it lies on the other side "
    "(for 'stays competitive': when it excludes the margin), *inconclusive* otherwise. A row decides only "
    "when every arm has 3 seeds (2 for the memorization sweep) and every run was trained to the budget T "
    "that the pilot run fixes; otherwise it is inconclusive and the reason says what is missing.")


def _mean_ci(df: pd.DataFrame, by, value="value") -> pd.DataFrame:
    from .stats import arm

    rows = []
    for key, g in df.groupby(by, dropna=False):
        a = arm("", g[value].to_numpy(dtype=float))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "value": a.text(".4g")})
    return pd.DataFrame(rows)


def fid_table(df):
    """FID per dataset size, method, training and sampler, with its mode, sample count and reference beside it
    (values of different modes are different rows, never pooled)."""
    d = df[df["metric"] == "fid"]
    if d.empty:
        return pd.DataFrame()
    d = d.assign(fid_mode=fid_modes(d))
    by = ["dataset", "n_train", "method", "training", "sampling", "nfe", "num_samples", "fid_ref_count", "fid_mode"]
    t = _mean_ci(d, by)
    t["fid_ref_count"] = t["fid_ref_count"].map(lambda c: "whole training split" if pd.isna(c) else int(c))
    t["nfe"] = t["nfe"].map(lambda v: "–" if pd.isna(v) else int(v))
    t["num_samples"] = t["num_samples"].map(lambda v: "–" if pd.isna(v) else int(v))
    return t[by + ["value"]].rename(columns={"n_train": "N", "value": "FID", "num_samples": "samples",
                                             "fid_ref_count": "reference images", "fid_mode": "FID mode"})


def memorization_table(df):
    d = df[df["metric"].isin(["mem_fraction_memorized", "mem_median_ratio"])]
    if d.empty:
        return pd.DataFrame()
    by = ["dataset", "n_train", "method", "training", "sampling", "num_samples"]
    parts = []
    for metric, label in (("mem_fraction_memorized", "fraction memorized"), ("mem_median_ratio", "median d1/d2")):
        t = _mean_ci(d[d["metric"] == metric], by).rename(columns={"value": label})
        parts.append(t[by + [label]])
    t = parts[0].merge(parts[1], on=by, how="outer")
    return t.rename(columns={"n_train": "N", "num_samples": "samples"})


def toy_table(df):
    """The 2D toy study's memorization, chance-corrected (Gu's criterion passes ~11% of 2D points by chance)."""
    d = df[df["metric"].isin(["toy_fraction_gu", "toy_fraction_gu_chance", "toy_fraction_gu_corrected"])]
    if d.empty:
        return pd.DataFrame()
    t = d.pivot_table(index=["factor", "model", "toy_width", "toy_n", "step"], columns="metric", values="value",
                      aggfunc="mean", dropna=False).reset_index().dropna(subset=["toy_fraction_gu"])
    return t.rename(columns={"toy_fraction_gu": "Gu fraction", "toy_fraction_gu_chance": "chance level",
                             "toy_fraction_gu_corrected": "chance-corrected", "toy_width": "width",
                             "toy_n": "N"})


def runs_table(df):
    d = df[df["metric"] == "train_loss"]
    if d.empty:
        return pd.DataFrame()
    last = d.loc[d.groupby("run")["step"].idxmax()]
    cols = ["run", "method", "network", "seed", "step", "value", "wall_time_s", "device", "git_commit"]
    cols = [c for c in cols if c in last.columns]
    return last[cols].rename(columns={"step": "steps", "value": "final loss"})


def _copy_images(images, fig_dir: Path):
    """The figures the stages drew (sample grids, memorized pairs, analyses), copied next to the report;
    those that do not exist (a partial grid) are left out."""
    out = []
    counts = {}
    for im in images:
        src, kind = Path(im["path"]), im.get("kind", "analysis")
        if not src.exists():
            continue
        i = counts[kind] = counts.get(kind, -1) + 1
        name = f"{kind}-{i:03d}{src.suffix}"
        shutil.copyfile(src, fig_dir / name)
        out.append((kind, f"figures/{name}", im.get("caption", "")))
    return out


def header(df: pd.DataFrame) -> str:
    """What the report covers: counts, the code versions (full commits, `-dirty` when a run's working tree
    had uncommitted changes) and the devices."""
    commits = sorted(df["git_commit"].dropna().unique()) if "git_commit" in df else []
    devices = sorted(df["device"].dropna().unique()) if "device" in df else []
    return (f"Runs: {df['run'].nunique()}; evaluations: {df['eval'].nunique() if 'eval' in df else 0}; "
            f"code: {', '.join(commits) or 'unknown'}; devices: {', '.join(devices) or 'unknown'}.")


def build_report(df: pd.DataFrame, profile: str, out_dir, images=(), budget_img: float | None = None) -> dict:
    """`images`: [{"kind": "samples" | "memorized" | "analysis", "path": ..., "caption": ...}] to show.
    budget_img: the budget T in training images when given; else the pilot run in `df` fixes it."""
    df = ensure_columns(conform(df))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_fig = Path(tempfile.mkdtemp(prefix=".figures-", dir=out))
    try:
        doc = Doc(f"diffrepro report — profile `{profile}`")
        doc.p(header(df))
        if profile == "smoke":
            doc.p("This is the `smoke` profile: tiny networks trained for minutes on a CPU. It checks that the "
                  "pipeline works end to end; its numbers say nothing about the papers' claims.")
        rows = evaluate(df, budget_img)
        claims = claims_table(df, budget_img, rows=rows)
        doc.h("What we found")
        datasets = sorted({str(d) for d in df.loc[df["run"].notna(), "dataset"].dropna().unique()})
        groups, scope = what_we_found(rows, datasets)
        for title, lines in groups:
            doc.items(title, lines)
        doc.p(scope)

        doc.h("How to read this report")
        doc.p(HOW_TO_READ)

        doc.h("Claims")
        doc.p(VERDICT_RULE)
        doc.p(f"Budget: {budget_of(df, budget_img).text()}.")
        doc.table(claims, "One row per claim of methods.md section 6.")

        doc.h("FID")
        doc.table(fid_table(df), "FID by dataset size, method and sampler, in the mode named beside it; seed mean "
                                 "[95% interval] (n).")
        doc.h("Memorization")
        doc.table(memorization_table(df), "Memorization (Gu et al. criterion) of the generated samples.")
        toy = toy_table(df)
        if not toy.empty:
            doc.h("2D toy study")
            doc.table(toy, "Samples passing Gu's criterion, its chance level (fresh draws of the true distribution "
                           "that pass) and (fraction - chance) / (1 - chance).")

        doc.h("Figures")
        made = []
        for name, (fn, caption) in FIGURES.items():
            if fn(df, tmp_fig / name):
                doc.image(f"figures/{name}", caption)
                made.append(name)
        copied = _copy_images(images, tmp_fig)
        for kind in ("analysis", "samples", "memorized"):
            for _, rel, caption in (i for i in copied if i[0] == kind):
                doc.image(rel, caption)

        doc.h("Runs")
        doc.table(runs_table(df), "Final state of each training run, with provenance.")

        fig_dir = out / "figures"
        if fig_dir.exists():
            shutil.rmtree(fig_dir)
        os.replace(tmp_fig, fig_dir)
    finally:
        if tmp_fig.exists():
            shutil.rmtree(tmp_fig)
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html())
    fid = df[df["metric"] == "fid"]
    mem = df[df["metric"] == "mem_fraction_memorized"]
    summary = {"profile": profile, "runs": int(df["run"].nunique()),
               "claims_filled": int((claims["verdict"] != NOT_RUN).sum()),
               "verdicts": claims.set_index("id")["verdict"].to_dict(),
               "headline": headline(rows),
               "fid": {k: float(v) for k, v in fid.groupby("eval")["value"].mean().items()},
               "fid_mode": {k: str(v) for k, v in fid.assign(m=fid_modes(fid)).groupby("eval")["m"].first().items()},
               "fraction_memorized": {k: float(v) for k, v in mem.groupby("eval")["value"].mean().items()},
               "figures": made}
    atomic_write_json(out / "summary.json", summary)
    return summary
