"""The claims table: one row per claim of the reproduced papers, filled from the metrics table.

Each evaluator looks for the runs its measurement needs; if they are absent the row says "not run"
and what would produce it. Verdicts: agrees / disagrees / inconclusive (with the reason). With two or
more seeds a difference counts only if it exceeds twice its standard error; with one seed, only if it
exceeds 10% (and the row says "one seed").
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

CLAIMS = [
    ("E1", "Heun rho=7 reaches Euler's FID with <= half the NFE", "EDM", "FID vs NFE, both samplers, same model",
     "NFE ratio <= 0.5"),
    ("E2", "EDM precond + log-normal sigma + lambda beat VP/VE at equal training", "EDM Table 2", "FID per config",
     "FID(EDM) < FID(VP), FID(VE)"),
    ("S1", "Masking up to 98% keeps FID competitive", "Sparse", "FID vs eta on full data",
     "FID(eta) <= 1.25 x FID(0)"),
    ("S2", "Masking reduces memorization on small data", "Sparse", "memorization ratio vs eta at N <= 2k",
     "memorized fraction falls with eta"),
    ("S3", "Masking avoids small-data instability", "Sparse", "FID vs training steps at small N",
     "baseline FID worsens late, masked does not"),
    ("I1", "InfoNoise reaches baseline FID in fewer updates", "InfoNoise", "steps-to-target-FID ratio",
     "ratio < 1"),
    ("T1", "STF lowers target variance at intermediate sigma", "STF", "trace-cov of targets vs sigma",
     "trace ratio < 1 at intermediate sigma"),
    ("T2", "STF improves FID at equal training", "STF", "FID", "FID(STF) < FID(baseline)"),
    ("K1", "Memorization rises with training time for large models", "K&K", "ratio vs steps x width",
     "memorized fraction grows with steps, more for wider nets"),
    ("K2", "Overfitting peaks at intermediate sigma", "K&K", "gap(sigma) curves", "gap peak not at the grid ends"),
    ("K3", "Trajectories stay away from noisy training data", "K&K", "trajectory distances",
     "trajectory distance to noised training data > that of noised training points"),
    ("G1", "Memorization falls as N grows", "Gu et al.", "ratio vs N", "memorized fraction falls with N"),
]


@dataclass
class Verdict:
    value: str
    spread: str
    verdict: str
    reason: str


NOT_RUN = "not run"
EVALUATORS: Dict[str, Callable[[pd.DataFrame], Verdict]] = {}


def evaluator(cid):
    def wrap(fn):
        EVALUATORS[cid] = fn
        return fn
    return wrap


# ------------------------------------------------------------------------------------ helpers
def seed_stats(df: pd.DataFrame, by: List[str], value="value") -> pd.DataFrame:
    g = df.groupby(by, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"])
    return out


def fmt(mean, std, n) -> str:
    if n and n > 1 and not math.isnan(std):
        return f"{mean:.3g} ± {std:.2g} (n={int(n)})"
    return f"{mean:.3g} (n=1)"


def compare(a: pd.Series, b: pd.Series) -> tuple[int, str]:
    """Sign of mean(a) - mean(b) if it is resolved (+1 / -1), else 0; with the rule used."""
    diff = a["mean"] - b["mean"]
    if a["count"] > 1 and b["count"] > 1:
        se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
        return (int(np.sign(diff)) if abs(diff) > 2 * se else 0), "2 s.e. rule"
    rel = abs(diff) / max(abs(b["mean"]), 1e-12)
    return (int(np.sign(diff)) if rel > 0.10 else 0), "one seed: 10% rule"


def baseline_mask(df):
    return (df.get("mask_ratio", 0) == 0) & (df.get("target", "none") == "none") & \
        (df.get("sigma_dist", "lognormal").isin(["lognormal", "vp", "loguniform"]))


def final_fid(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["metric"] == "fid"]


def _short(run: str) -> str:
    """A run's key without its seed and hash: fmnist-n100_sparse-90_mem-medium_s0_6c87cfda -> ..._mem-medium."""
    return re.sub(r"_s\d+_[0-9a-f]+$", "", run)


def not_run(reason: str) -> Verdict:
    return Verdict("–", "–", NOT_RUN, reason)


# ------------------------------------------------------------------------------------ evaluators
@evaluator("E1")
def _e1(df):
    fid = final_fid(df)
    best = None
    for run, g in fid.groupby("run"):
        eu, he = g[g["sampler"] == "euler"], g[g["sampler"] == "heun"]
        if eu.empty or len(he) < 2:
            continue
        target = eu.loc[eu["nfe"].idxmax()]
        ok = he[he["value"] <= target["value"]]
        ratio = (ok["nfe"].min() / target["nfe"]) if len(ok) else float("inf")
        best = (run, target, ratio)
        break
    if best is None:
        return not_run("needs one model sampled with Euler and with Heun at several step counts")
    run, target, ratio = best
    value = f"Euler FID {target['value']:.3g} at {int(target['nfe'])} NFE; Heun NFE ratio {ratio:.2f}"
    if math.isinf(ratio):
        return Verdict(value, "one model", "disagrees", "no Heun setting reached Euler's best FID")
    return Verdict(value, "one model", "agrees" if ratio <= 0.5 else "disagrees", f"run {run}")


@evaluator("E2")
def _e2(df):
    fid = primary(final_fid(df))
    fid = fid[fid["method"].isin(["edm", "vp", "ve"])]
    if fid.empty:
        return not_run("needs FID of EDM, VP and VE runs")
    for (ds, n, tr), g in fid.groupby(["dataset", "n_train", "training"]):
        st = seed_stats(g, ["precond"]).set_index("precond")
        if "edm" in st.index and len(st) >= 2:
            others = [p for p in ("vp", "ve") if p in st.index]
            signs = [compare(st.loc["edm"], st.loc[o])[0] for o in others]
            rule = compare(st.loc["edm"], st.loc[others[0]])[1]
            value = ", ".join(f"{p.upper()} {st.loc[p, 'mean']:.3g}" for p in st.index)
            spread = "; ".join(fmt(st.loc[p, "mean"], st.loc[p, "std"], st.loc[p, "count"]) for p in st.index)
            verdict = "agrees" if all(s < 0 for s in signs) else ("disagrees" if any(s > 0 for s in signs)
                                                                   else "inconclusive")
            return Verdict(f"{ds} N={n}: {value}", spread, verdict, f"{rule}; training {tr}")
    return not_run("needs EDM and VP/VE runs on the same dataset size and training config")


def primary(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows of each run's main sampler: the sampling setting used by the most runs (a sampler
    sweep on one model must not count as extra seeds)."""
    if "sampling" not in df or df["sampling"].isna().all():
        return df
    main = df.dropna(subset=["sampling"]).groupby("sampling")["run"].nunique().idxmax()
    return df[df["sampling"] == main]


def _by_mask(df, metric, max_n=None, prefer=None):
    """Seed statistics per mask ratio for one (training setting, dataset size) at which at least two mask
    ratios were run: the largest size (or, with max_n, among sizes <= max_n the one where `prefer`, a
    function of the statistics, is largest; default the smallest size). Returns (n, training, stats)."""
    m = primary(df[(df["metric"] == metric) & (df.get("target", "none") == "none") & (df["precond"] == "edm")
                   & (df["sigma_dist"] == "lognormal")])
    if "mask_ratio" not in m or m.empty:
        return None
    groups = [(n, tr, g) for (tr, n), g in m.groupby(["training", "n_train"])
              if g["mask_ratio"].nunique() >= 2 and (g["mask_ratio"] == 0).any() and (max_n is None or n <= max_n)]
    if not groups:
        return None
    stats = [(n, tr, seed_stats(g, ["mask_ratio"]).set_index("mask_ratio").sort_index()) for n, tr, g in groups]
    if max_n is None:
        return max(stats, key=lambda t: t[0])
    if prefer is None:
        return min(stats, key=lambda t: t[0])
    return max(stats, key=lambda t: (prefer(t[2]), -t[0]))


@evaluator("S1")
def _s1(df):
    r = _by_mask(df, "fid")
    if r is None:
        return not_run("needs FID of masked runs and an unmasked baseline on one dataset size")
    n, _, st = r
    base = st.loc[0.0]
    worst = max(st.index)
    rel = st.loc[worst, "mean"] / base["mean"]
    value = f"N={n}: " + ", ".join(f"eta={k:g}: {v:.3g}" for k, v in st["mean"].items())
    spread = "; ".join(fmt(r_["mean"], r_["std"], r_["count"]) for _, r_ in st.iterrows())
    full = df.loc[df["metric"] == "fid", "n_train"].max()
    note = "" if n == full else f"; measured at N={n}, no masked run on the largest set (N={full})"
    return Verdict(value, spread, "agrees" if rel <= 1.25 else "disagrees", f"FID(eta={worst:g}) / FID(0) = {rel:.2f}{note}")


@evaluator("S2")
def _s2(df):
    # the setting where the unmasked baseline memorizes most: masking can only reduce memorization that exists
    r = _by_mask(df, "mem_fraction_memorized", max_n=2000, prefer=lambda st: st.loc[0.0, "mean"])
    if r is None:
        return not_run("needs memorization of masked runs at N <= 2000")
    n, training, st = r
    sign, rule = compare(st.loc[max(st.index)], st.loc[0.0])
    value = f"N={n} ({training}): " + ", ".join(f"eta={k:g}: {v:.3f}" for k, v in st["mean"].items())
    value += _mask_curve_note(df, n, training)
    spread = "; ".join(fmt(r_["mean"], r_["std"], r_["count"]) for _, r_ in st.iterrows())
    verdict = {-1: "agrees", 1: "disagrees", 0: "inconclusive"}[sign]
    if st["mean"].max() == 0:
        return Verdict(value, spread, "inconclusive", "no memorization at any eta: the baseline must memorize first")
    return Verdict(value, spread, verdict, rule + " on the final samples")


def _mask_curve_note(df, n, training) -> str:
    """'; over training (eta=0 / eta=x): step s a/b, ...' from the per-checkpoint memorization, if analysed."""
    c = df[(df["metric"] == "mem_fraction_ckpt") & (df["n_train"] == n) & (df["training"] == training)
           & (df.get("target", "none") == "none") & (df["sigma_dist"] == "lognormal")]
    if c.empty or c["mask_ratio"].nunique() < 2:
        return ""
    p = c.pivot_table(index="step", columns="mask_ratio", values="value").dropna().sort_index()
    if p.empty or 0.0 not in p:
        return ""
    eta = max(p.columns)
    steps = ", ".join(f"step {int(s)} {p.loc[s, 0.0]:.2f}/{p.loc[s, eta]:.2f}" for s in p.index)
    return f"; over training (eta=0/eta={eta:g}): {steps}"


def _fid_curves(df: pd.DataFrame) -> pd.DataFrame:
    """FID at analysed checkpoints (mean over seeds per step) of EDM-preconditioned runs."""
    return df[(df["metric"] == "fid_ckpt") & (df["precond"] == "edm")]


def _curve(g: pd.DataFrame) -> pd.Series:
    return g.groupby("step")["value"].mean().sort_index()


def _samples_note(g: pd.DataFrame) -> str:
    counts = sorted({int(c) for c in g["num_samples"].dropna()})
    return f"FID of {', '.join(map(str, counts)) or '?'} samples per checkpoint"


@evaluator("S3")
def _s3(df):
    f = _fid_curves(df)
    f = f[(f["sigma_dist"] == "lognormal") & (f["target"] == "none")]
    settings = [(n, tr) for (tr, n), g in f.groupby(["training", "n_train"])
                if g["mask_ratio"].nunique() >= 2 and (g["mask_ratio"] == 0).any()]
    if not settings:
        return not_run("needs FID at several checkpoints (analysis_steps) of masked and unmasked runs at one small N")
    n, training = min(settings)             # the smallest N; runs of one training setting only
    g = f[(f["n_train"] == n) & (f["training"] == training)]
    late = {}
    for eta, r in g.groupby("mask_ratio"):
        c = _curve(r)
        late[eta] = (c.iloc[-1] / c.min() - 1, c)          # how far the last checkpoint is above the best one
    value = f"N={n} ({training}): " + "; ".join(f"eta={eta:g}: FID {c.iloc[0]:.3g} -> min {c.min():.3g} -> last {c.iloc[-1]:.3g}"
                                   for eta, (_, c) in sorted(late.items()))
    spread = f"{g['seed'].nunique()} seed(s) per run; {_samples_note(g)}"
    worse = {eta: w > 0.10 for eta, (w, _) in late.items()}
    if not worse[0.0]:
        return Verdict(value, spread, "inconclusive", "the baseline's FID does not worsen late (last within 10% of its "
                       "best checkpoint): no instability to avoid at this N and training length")
    verdict = "agrees" if not any(w for eta, w in worse.items() if eta > 0) else "disagrees"
    return Verdict(value, spread, verdict, "worsens late = last checkpoint's FID > 1.1 x the best checkpoint's")


@evaluator("I1")
def _i1(df):
    f = _fid_curves(df)
    f = f[(f["mask_ratio"] == 0) & (f["target"] == "none")]
    for (ds, n, tr), g in f.groupby(["dataset", "n_train", "training"]):
        base, info = g[g["sigma_dist"] == "lognormal"], g[g["sigma_dist"] == "infonoise"]
        if base.empty or info.empty:
            continue
        b, i = _curve(base), _curve(info)
        target = b.iloc[-1]

        def first(c):
            hit = c.index[c.values <= target]
            return int(hit[0]) if len(hit) else None
        sb, si = first(b), first(i)
        value = (f"{ds} N={n}: baseline reaches its final FID {target:.3g} at step {sb}; "
                 f"InfoNoise {'at step ' + str(si) if si is not None else 'not within ' + str(int(i.index[-1])) + ' steps'}")
        spread = f"{g['seed'].nunique()} seed(s); {_samples_note(g)}; checkpoints {', '.join(str(int(s)) for s in b.index)}"
        if si is None:
            return Verdict(value, spread, "disagrees", "InfoNoise never reached the baseline's final FID")
        ratio = si / sb
        verdict = "agrees" if ratio < 1 else ("inconclusive" if ratio == 1 else "disagrees")
        return Verdict(f"{value}; ratio {ratio:.2f}", spread, verdict,
                       "steps to reach the baseline's FID at its last analysed checkpoint, at checkpoint resolution"
                       + (" (same checkpoint: finer analysis_steps needed)" if ratio == 1 else ""))
    return not_run("needs FID at several checkpoints (analysis_steps) of an InfoNoise run and its EDM baseline")


@evaluator("T1")
def _t1(df):
    d = df[(df["metric"] == "stf_trace_ratio") & (df["ref_batch"] > 1)]
    if d.empty:
        return not_run("needs the target-variance analysis of an image subset")
    n = d["n_train"].max()
    d = d[d["n_train"] == n]
    mid = d[d["sigma"].between(0.5, 5.0)]
    small = d[d["sigma"] <= 0.2]
    per_r = mid.groupby("ref_batch")["value"].mean()
    value = f"{d['dataset'].iloc[0]} N={n}, 0.5<=sigma<=5: " + ", ".join(f"|R|={int(r)}: {v:.2f}" for r, v in per_r.items())
    spread = ("at sigma<=0.2 both traces are 0 (posterior on the own image)" if small["value"].isna().all()
              else f"at sigma<=0.2 ratio {small['value'].min():.2f}-{small['value'].max():.2f}") if len(small) else "–"
    verdict = "agrees" if (per_r < 1).all() and per_r.min() < 0.8 else "disagrees"
    return Verdict(value, spread, verdict, "STF/baseline trace of the target covariance; Monte Carlo, paired draws")


@evaluator("T2")
def _t2(df):
    fid = primary(final_fid(df))
    if "target" not in fid or not (fid["target"] == "stf").any():
        return not_run("needs FID of an STF run and its baseline")
    # STF alone: runs that also mask or adapt sigma (combinations) answer a different question
    stf = fid[(fid["target"] == "stf") & (fid["mask_ratio"] == 0) & (fid["sigma_dist"] == "lognormal")
              & (fid["precond"] == "edm")]
    for (ds, n, tr), g in stf.groupby(["dataset", "n_train", "training"]):
        base = fid[(fid["dataset"] == ds) & (fid["n_train"] == n) & (fid["training"] == tr) & (fid["method"] == "edm")]
        if base.empty:
            continue
        a, b = seed_stats(g, ["dataset"]).iloc[0], seed_stats(base, ["dataset"]).iloc[0]
        sign, rule = compare(a, b)
        return Verdict(f"{ds} N={n}: STF {a['mean']:.3g} vs EDM {b['mean']:.3g}",
                       f"{fmt(a['mean'], a['std'], a['count'])}; {fmt(b['mean'], b['std'], b['count'])}",
                       {-1: "agrees", 1: "disagrees", 0: "inconclusive"}[sign], rule)
    return not_run("needs an STF run and an EDM baseline with the same data and training")


@evaluator("K1")
def _k1(df):
    parts, verdicts = [], []
    toy = df[(df["metric"] == "toy_fraction_gu") & (df.get("model", "") == "mlp")] if "model" in df else df.iloc[:0]
    for factor, col in (("step", "step"), ("width", "toy_width")):
        t = toy[toy["factor"] == factor].sort_values(col) if len(toy) else toy
        if len(t) >= 2:
            first, last = t["value"].iloc[0], t["value"].iloc[-1]
            parts.append(f"2D toy, Gu fraction vs {factor}: {first:.2f} -> {last:.2f}")
            verdicts.append(last > first)
    m = df[df["metric"] == "mem_fraction_ckpt"]
    width_parts, still = _k1_widths(m, verdicts), []
    parts += width_parts
    for run, g in m.groupby("run"):
        g = g.sort_values("step")
        if len(g) >= 2:
            text = f"{_short(run)}: {g['value'].iloc[0]:.3f} -> {g['value'].iloc[-1]:.3f} over steps"
            if g["value"].max() > 0:       # runs that memorize first: they carry the verdict
                parts.append(text)
                verdicts.append(g["value"].iloc[-1] > g["value"].iloc[0])
            else:
                still.append(text)
    if still:
        parts.append(f"{len(still)} run(s) memorize nothing at any checkpoint")
    if not parts:
        return not_run("needs memorization at several checkpoints (analysis_steps) or the 2D toy study")
    verdict = "agrees" if verdicts and all(verdicts) else ("disagrees" if verdicts else "inconclusive")
    reason = "memorized fraction at first vs last checkpoint / smallest vs largest width"
    if not verdicts:
        reason = "no memorization at any checkpoint"
    return Verdict("; ".join(parts[:6]), "one seed per setting", verdict, reason)


def _k1_widths(m: pd.DataFrame, verdicts: list) -> list:
    """Same data, method and checkpoints, different U-Net widths: mean memorized fraction over the shared
    checkpoints, narrow vs wide; appends (wide > narrow) to `verdicts` where anything memorizes."""
    from diffrepro.presets import UNET_PRESETS
    if "network" not in m or m.empty:
        return []
    parts = []
    for (ds, n, method), g in m.groupby(["dataset", "n_train", "method"]):
        nets = sorted((x for x in g["network"].dropna().unique() if x in UNET_PRESETS),
                      key=lambda x: UNET_PRESETS[x]["model_channels"])
        if len(nets) < 2:
            continue
        steps = [set(g.loc[g["network"] == x, "step"]) for x in (nets[0], nets[-1])]
        if steps[0] != steps[1]:        # different checkpoint grids: different training runs, not just widths
            continue
        p = g.pivot_table(index="step", columns="network", values="value")[[nets[0], nets[-1]]].dropna()
        if len(p) < 1:
            continue
        narrow, wide = p[nets[0]].mean(), p[nets[-1]].mean()
        parts.append(f"{ds} N={n} {method}, mean over steps {', '.join(str(int(x)) for x in p.index)}: "
                     f"{nets[0]} {narrow:.2f} vs {nets[-1]} {wide:.2f}")
        if p.values.max() > 0:
            verdicts.append(wide > narrow)
    return parts


@evaluator("K2")
def _k2(df):
    g = df[df["metric"].isin(["gap", "se_gap"])]
    if g.empty:
        return not_run("needs the per-sigma gap at analysed checkpoints")
    out, kinds = [], []
    for run, r in g.groupby("run"):
        last = r[r["step"] == r["step"].max()].pivot_table(index="sigma", columns="metric", values="value").sort_index()
        k = int(last["gap"].values.argmax())
        ends = max(last["gap"].iloc[0], last["gap"].iloc[-1])
        se = float(last["se_gap"].iloc[k]) if "se_gap" in last else 0.0
        if not 0 < k < len(last) - 1:
            kinds.append("end")
        else:
            kinds.append("clear" if last["gap"].iloc[k] - ends > 2 * se else "weak")
        out.append(f"{_short(run)}: peak {last['gap'].iloc[k]:.3g} at sigma {last.index[k]:.2g} ({kinds[-1]})")
    n = len(kinds)
    verdict = ("agrees" if kinds.count("clear") > n / 2 else "disagrees" if kinds.count("end") > n / 2
               else "inconclusive")
    return Verdict("; ".join(out[:4]), f"{kinds.count('clear')} clear, {kinds.count('weak')} within 2 s.e. of an end, "
                   f"{kinds.count('end')} at an end (of {n} runs)", verdict,
                   "interior peak above both grid ends by > 2 s.e. counts as clear (last analysed checkpoint)")


MEMORIZING = 0.1   # a run whose final samples are >= 10% memorized is in the memorization regime


@evaluator("K3")
def _k3(df):
    t = df[df["metric"].isin(["traj_r_traj", "traj_r_train"])]
    if t.empty:
        return not_run("needs the trajectory analysis")
    t = t[t["sigma"].between(0.1, 5.0)]
    mem = primary(df[df["metric"] == "mem_fraction_memorized"]).groupby("run")["value"].mean()
    groups = {"generalizing": [], "memorizing": []}
    for run, r in t.groupby("run"):
        p = r.pivot_table(index="sigma", columns="metric", values="value")
        kind = "memorizing" if mem.get(run, 0.0) >= MEMORIZING else "generalizing"
        groups[kind].append((_short(run), float((p["traj_r_traj"] / p["traj_r_train"]).mean())))
    parts = [f"{kind} runs ({len(g)}): r_traj/r_train median {np.median([v for _, v in g]):.2f}, "
             f"range {min(v for _, v in g):.2f}-{max(v for _, v in g):.2f}" for kind, g in groups.items() if g]
    gen = groups["generalizing"]
    reason = ("mean over 0.1 <= sigma <= 5 of the median distance of trajectory points to the nearest training "
              "point over that of noised training points (> 1.05: trajectories stay away); judged on runs whose "
              f"samples are < {MEMORIZING:.0%} memorized (memorizing models follow the noised data, like the "
              "ideal denoiser)")
    if not gen:
        return Verdict("; ".join(parts), f"{len(groups['memorizing'])} runs", "inconclusive",
                       "every analysed run memorizes: " + reason)
    agree = [v > 1.05 for _, v in gen]
    verdict = "agrees" if all(agree) else ("disagrees" if not any(agree) else "inconclusive")
    return Verdict("; ".join(parts), f"{len(gen)} generalizing, {len(groups['memorizing'])} memorizing runs",
                   verdict, reason)


@evaluator("G1")
def _g1(df):
    m = primary(df[(df["metric"] == "mem_fraction_memorized") & (df["method"] == "edm")])
    groups = [(ds, tr, g) for (ds, tr), g in m.groupby(["dataset", "training"]) if g["n_train"].nunique() >= 2]
    if not groups:
        return not_run("needs memorization of the EDM baseline at two or more dataset sizes with the same training")
    # the setting where the baseline memorizes most (without memorization there is nothing to fall)
    ds, training, g = max(groups, key=lambda t: (t[2]["value"].max(), t[2]["n_train"].nunique()))
    st = seed_stats(g, ["n_train"]).set_index("n_train").sort_index()
    sign, rule = compare(st.iloc[-1], st.iloc[0])
    value = f"{ds}, {training}: " + ", ".join(f"N={int(k)}: {v:.3f}" for k, v in st["mean"].items())
    others = [f"{tr}: max {gg['value'].max():.3f}" for d, tr, gg in groups if (d, tr) != (ds, training)]
    if others:
        value += f" (other settings: {'; '.join(others)})"
    spread = "; ".join(fmt(r["mean"], r["std"], r["count"]) for _, r in st.iterrows())
    verdict = {-1: "agrees", 1: "disagrees", 0: "inconclusive"}[sign]
    if sign == 0 and st["mean"].max() == 0:
        return Verdict(value, spread, "inconclusive", "no memorization at any N: train longer on small N")
    return Verdict(value, spread, verdict, rule)


OPTIONAL_COLUMNS = ("run", "eval", "analysis", "dataset", "n_train", "method", "precond", "sigma_dist",
                    "mask_ratio", "target", "training", "seed", "sampling", "sampler", "nfe", "num_samples",
                    "step", "sigma", "ref_batch", "model", "factor", "toy_width", "toy_n")


def ensure_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Profiles that skip a stage lack its columns; evaluators and figures expect them (as NaN)."""
    missing = [c for c in OPTIONAL_COLUMNS if c not in df.columns]
    return df.assign(**{c: np.nan for c in missing}) if missing else df


def claims_table(df: pd.DataFrame, extra: Optional[Dict[str, Callable]] = None) -> pd.DataFrame:
    df = ensure_columns(df)
    evals = {**EVALUATORS, **(extra or {})}
    rows = []
    for cid, claim, source, measurement, direction in CLAIMS:
        fn = evals.get(cid)
        v = fn(df) if fn else not_run(f"needs: {measurement}")
        rows.append({"id": cid, "claim": claim, "source": source, "measurement": measurement,
                     "paper's direction": direction, "measured": v.value, "seed spread": v.spread,
                     "verdict": v.verdict, "reason": v.reason})
    return pd.DataFrame(rows)
