"""The claims table: one row per claim of the reproduced papers, decided as methods.md section 6 says.

Each evaluator reads the tidy metrics table (one row per run x evaluation x metric x step, with the run's
configuration columns: dataset, n_train, method, precond, sigma_dist, mask_ratio, target, training,
network, seed, ...) and returns a `Row`: the arms it compares (each arm's seeds, mean and 95% t interval),
the compared quantity with its interval (stats.py), the verdict and the reason. A verdict is "agrees" or
"disagrees" only when

  * every arm has the seeds section 6 asks for (3; 2 for the memorization sweep), and
  * every run was trained to the budget T (the pilot run fixes T: fid_curves.budget_from_curve),
  * and the row's own measurement conditions hold (e.g. VE sampled inside its trained range, |R|/N in the
    paper's range, a baseline that is partly memorized);

otherwise it is "inconclusive" and the reason names what is missing. The numbers are shown either way.
A claim whose measurement was not run at all says "not run" and what would produce it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from ..metrics.fid_curves import budget_from_curve, steps_to_target
from ..metrics.generalization import (gap_significance, heldout_loss, intermediate_gap, weighted_gap_peak)
from ..metrics.sampler_error import nfe_to_reference
from . import stats
from .stats import AGREES, DISAGREES, INCONCLUSIVE, MIN_SEEDS, MIN_SEEDS_MEMORIZATION, Arm, Interval, arm

NOT_RUN = "not run"

# id, claim, source, the measurement that decides (methods.md section 6), the paper's side
CLAIMS = [
    ("E1", "Heun rho=7 reaches a given FID with far fewer NFE than Euler", "EDM",
     "converged baseline, Heun N in {5..32} and Euler N in {8..256} against a Heun-256 reference on the same "
     "latents: NFE to within 2% of the reference FID; per-sample RMSE to the reference images",
     "NFE(Heun) / NFE(Euler) < 1"),
    ("E2", "EDM precond + log-normal sigma + lambda beat VP/VE at equal training", "EDM Table 2",
     "EDM, VP, VE x 3 seeds to T; VE and VP sampled inside their trained sigma range; final FID",
     "FID(EDM) - FID(VP), FID(EDM) - FID(VE) < 0"),
    ("S1", "Masking up to 98% keeps FID competitive", "Sparse",
     "full data, eta in {0, 0.5, 0.9, 0.98} x 3 seeds to T; best-checkpoint FID ratio to eta=0 "
     "(and eta=0.98 at 2T)", "FID(eta) / FID(0) < 1.25 (interval under the margin)"),
    ("S2", "Masking reduces memorization on small data", "Sparse",
     "at the N where the baseline is 30-70% memorized: memorized fraction, eta > 0 vs eta = 0, 2 seeds",
     "fraction(eta) - fraction(0) < 0"),
    ("S3", "Masking avoids small-data instability", "Sparse",
     "smallest N: rise of the held-out denoising loss from its minimum to the last checkpoint, eta = 0.9 vs 0; "
     "FID against the held-out split beside it", "baseline rises; rise(eta) - rise(0) < 0"),
    ("I1", "InfoNoise reaches baseline FID in fewer updates", "InfoNoise",
     "3 seeds per arm, FID every 5% of T; steps to reach several target FIDs (interpolated); ratio of steps",
     "steps(InfoNoise) / steps(EDM) < 1"),
    ("T1", "STF lowers target variance at intermediate sigma", "STF",
     "trace of the target covariance vs sigma, |R| in {256, 1024, 4096}, full set; ratio to the baseline at "
     "0.5 <= sigma <= 5", "trace ratio < 1"),
    ("T2", "STF improves FID at equal training", "STF",
     "full set, |R|/N in the paper's range (2-8%), 3 seeds to T; final FID", "FID(STF) - FID(EDM) < 0"),
    ("K1", "The denoiser memorizes more with training time and width, while samples follow less", "K&K",
     "held-out - training loss at intermediate sigma (0.2-5) over steps x width, 2 seeds; sample memorized "
     "fraction beside it", "gap grows with steps; gap(wide) - gap(narrow) > 0"),
    ("K2", "Overfitting peaks at intermediate sigma", "K&K",
     "relative gap(sigma) = gap / training MSE at the last checkpoint, on runs whose gap is significant "
     "(> 3 s.e.)", "interior peak above both grid ends"),
    ("K3", "Trajectories stay away from noisy training data", "K&K",
     "at the sigma where the gap peaks: the ideal denoiser's posterior concentration (max weight) on sampler "
     "trajectory points vs on noised training points", "log(w_max traj / w_max train) < 0"),
    ("G1", "Memorization falls as N grows", "Gu et al.",
     "N in {100, 300, 1000, 3000}, 2 seeds, memorized fraction (d1/d2 < 1/3); slope vs log10 N",
     "slope < 0"),
]

GAP_Z = 3.0                  # [ours] a gap curve is significant when its largest gap exceeds 3 standard errors
MID_SIGMA = (0.5, 5.0)       # intermediate sigma of claim T1 (as the STF paper's figure)
PARTLY_MEMORIZED = (0.3, 0.7)
PAPER_REF_BATCH = (0.02, 0.08)


@dataclass
class Row:
    arms: List[Arm] = field(default_factory=list)
    compared: List[Interval] = field(default_factory=list)
    verdict: str = INCONCLUSIVE
    reason: str = ""
    details: str = ""
    needs: List[str] = field(default_factory=list)     # what would decide an open row, in plain words
    leaning: str = ""                                  # the verdict the interval alone gives, when gated


def not_run(reason: str) -> Row:
    return Row(verdict=NOT_RUN, reason=reason)


# ------------------------------------------------------------------------------------------ budget
@dataclass(frozen=True)
class Budget:
    """The budget T in training images (None: not fixed) and where it came from."""
    T_img: Optional[float]
    source: str

    def text(self) -> str:
        return f"T = {self.T_img / 1e6:.3g} Mimg ({self.source})" if self.T_img else f"T not fixed ({self.source})"


PILOT_TRAINING = "claims-pilot"


def trained_images(df: pd.DataFrame) -> pd.Series:
    """Training images each run saw (its last logged nimg)."""
    t = df[(df["metric"] == "train_loss") & df["nimg"].notna()]
    return t.groupby("run")["nimg"].max()


def budget_of(df: pd.DataFrame, T_img: Optional[float] = None, pilot: str = PILOT_TRAINING) -> Budget:
    """T given (params), or fixed by the pilot run's FID curve in `df` (training setting `pilot`)."""
    if T_img:
        return Budget(float(T_img), "given")
    p = df[(df["training"] == pilot) & (df["metric"] == "fid_ckpt")]
    if p.empty:
        return Budget(None, "no pilot run in this table")
    run = sorted(p["run"].unique())[0]
    curve = p[p["run"] == run].groupby("step")["value"].mean()
    T_step = budget_from_curve(curve.index.to_numpy(), curve.to_numpy())
    if T_step is None:
        return Budget(None, f"the pilot {_short(run)} did not converge: FID still moved > 5% over the last quarter")
    t = df[(df["run"] == run) & (df["metric"] == "train_loss") & (df["step"] > 0)]
    batch = float((t["nimg"] / t["step"]).median()) if len(t) else math.nan
    return Budget(T_step * batch, f"pilot {_short(run)}: step {int(T_step)}")


def budget_reason(df: pd.DataFrame, runs: Sequence[str], budget: Budget, factor: float = 1.0) -> Optional[str]:
    """None if every run trained for >= factor * T images, else why not."""
    if not budget.T_img:
        return f"not trained to the budget T ({budget.source})"
    seen = trained_images(df)
    short = sorted({_short(r) for r in runs if not seen.get(r, 0) >= factor * budget.T_img * (1 - 1e-9)})
    if short:
        mimg = sorted({seen.get(r, math.nan) / 1e6 for r in runs if _short(r) in short})
        return (f"not trained to the budget T ({budget.text()}; {', '.join(f'{m:.3g}' for m in mimg)} Mimg: "
                f"{', '.join(short[:3])}{'...' if len(short) > 3 else ''})")
    return None


# ------------------------------------------------------------------------------------------ table helpers
ARM_COLUMNS = ["dataset", "n_train", "method", "precond", "sigma_dist", "mask_ratio", "target", "training", "network"]


def _short(run: str) -> str:
    """A run's key without its seed and hash: fmnist-n100_sparse-90_mem-medium_s0_6c87cfda -> ..._mem-medium."""
    return re.sub(r"_s\d+_[0-9a-f]+$", "", str(run))


def primary(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows of each run's main sampler: the sampling setting used by the most runs (a sampler
    sweep on one model must not count as extra seeds)."""
    if "sampling" not in df or df["sampling"].isna().all():
        return df
    main = df.dropna(subset=["sampling"]).groupby("sampling")["run"].nunique().idxmax()
    return df[df["sampling"] == main]


def per_run(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value per run of a final-evaluation metric (the main sampler, the largest sample count), with
    the run's configuration columns."""
    d = primary(df[df["metric"] == metric])
    if d.empty:
        return d
    if d["num_samples"].notna().any():
        d = d[d["num_samples"] == d.groupby("run")["num_samples"].transform("max")]
    cols = [c for c in ARM_COLUMNS + ["seed", "ref_batch", "sample_sigma_min", "sample_sigma_max"] if c in d]
    agg = {c: "first" for c in cols}
    agg["value"] = "mean"
    return d.groupby("run", as_index=False).agg(agg)


def _baseline(d: pd.DataFrame) -> pd.Series:
    return ((d["method"] == "edm") & (d["precond"] == "edm") & (d["mask_ratio"].fillna(0) == 0)
            & (d["target"].fillna("none") == "none") & (d["sigma_dist"].fillna("lognormal") == "lognormal"))


def _arm(name: str, rows: pd.DataFrame, value="value") -> Arm:
    return arm(name, rows[value].to_numpy(dtype=float))


def _settings(d: pd.DataFrame, by=("dataset", "n_train", "training")):
    return [(k if isinstance(k, tuple) else (k,), g) for k, g in d.groupby(list(by), dropna=False)]


def finish(row: Row, verdict: str, required: int, budget_text: Optional[str], extra: Sequence[str] = ()) -> Row:
    """Apply the gates: seeds, budget, the row's own conditions (`extra` reasons block the verdict too)."""
    v, blocked = stats.gate(verdict, row.arms, required, budget_text)
    blocked = blocked + [e for e in extra if e]
    row.verdict = INCONCLUSIVE if blocked else v
    if stats.seed_shortfall(row.arms, required):
        row.needs.append(f"more seeds ({required} per arm; fewest now {min(a.n for a in row.arms)})")
    if budget_text:
        row.needs.append("training every run to the budget T" if "no pilot" not in budget_text and
                         "did not converge" not in budget_text else
                         f"a pilot run that fixes the budget T ({budget_text.split('(', 1)[-1].rstrip(')')}), "
                         f"then training every run to it")
    row.needs += [e for e in extra if e]
    if not blocked and v == INCONCLUSIVE:
        row.needs.append("more seeds: the 95% interval of " + ", ".join(iv.kind for iv in row.compared) +
                         " includes the paper's threshold")
    if blocked and verdict != INCONCLUSIVE:
        row.leaning = verdict
    if blocked:
        row.reason = "; ".join(blocked) + (f" (the interval alone would say: {verdict})" if verdict != INCONCLUSIVE
                                           else "") + (f". {row.reason}" if row.reason else "")
    return row


EVALUATORS: Dict[str, Callable[[pd.DataFrame, Budget], Row]] = {}


def evaluator(cid):
    def wrap(fn):
        EVALUATORS[cid] = fn
        return fn
    return wrap


# ------------------------------------------------------------------------------------------ evaluators
@evaluator("E1")
def _e1(df, budget):
    fid = df[(df["metric"] == "fid") & df["nfe"].notna() & df["sampler"].isin(["heun", "euler"])]
    fid = fid[_baseline(fid)]
    swept = fid.groupby("run")["nfe"].nunique()
    fid = fid[fid["run"].isin(swept[swept >= 3].index)]
    if fid.empty:
        return not_run("needs converged EDM baselines sampled with Heun and Euler at several step counts and a "
                       "Heun-256 reference")
    ref = fid[(fid["sampler"] == "heun") & (fid["num_steps"] >= 256)]
    runs = sorted(fid["run"].unique())
    if ref.empty:
        best = fid.loc[fid["value"].idxmin()]
        return Row(verdict=INCONCLUSIVE, reason="no Heun-256 reference on the same latents: the NFE to reach the "
                   "reference FID cannot be measured (an undertrained model's truncation error can make a coarse "
                   "sampler's FID look better)",
                   details=f"{len(runs)} model(s); best FID {best['value']:.3g} ({best['sampler']}, "
                           f"{int(best['nfe'])} NFE)",
                   needs=["the Heun-256 reference sampled on the same latents as the sweep (the claims profile's "
                          "block C)"])
    heun_n, euler_n = [], []
    for run in runs:
        g = fid[fid["run"] == run]
        r = ref[ref["run"] == run]
        if r.empty:
            continue
        ref_fid = float(r["value"].mean())
        for sampler, out in (("heun", heun_n), ("euler", euler_n)):
            s = g[(g["sampler"] == sampler) & ~g.index.isin(r.index)].groupby("nfe")["value"].mean()
            if len(s):
                out.append(nfe_to_reference(s.index.to_numpy(), s.to_numpy(), ref_fid))
    a, b = arm("Heun NFE", heun_n), arm("Euler NFE", euler_n)
    ratio = stats.bootstrap_ratio(a, b)
    row = Row(arms=[a, b], compared=[ratio],
              reason="NFE from which FID stays within 2% of the Heun-256 FID (interpolated in ln NFE); "
                     "ratio of seed means, bootstrap over models")
    rmse = df[(df["metric"] == "rmse_to_reference") & df["run"].isin(runs)]
    if len(rmse):
        m = rmse.groupby(["sampler", "nfe"])["value"].mean()
        row.details = "per-sample RMSE to the reference: " + ", ".join(
            f"{s} {int(n)} NFE {v:.3g}" for (s, n), v in m.items())
    else:
        row.details = "per-sample RMSE to the reference not measured"
    if math.isinf(a.mean) or math.isinf(b.mean):
        row.reason += "; a sampler never stays within 2% of the reference on some model"
    return finish(row, stats.side_verdict(ratio, "<", 1.0), MIN_SEEDS, budget_reason(df, runs, budget))


@evaluator("E2")
def _e2(df, budget):
    fid = per_run(df, "fid")
    if fid.empty:
        return not_run("needs the final FID of EDM, VP and VE runs")
    d = fid[fid["method"].isin(["edm", "vp", "ve"]) & (fid["mask_ratio"].fillna(0) == 0)
            & (fid["target"].fillna("none") == "none")]
    options = [(k, g) for k, g in _settings(d) if g["precond"].nunique() >= 2 and (g["precond"] == "edm").any()]
    if not options:
        return not_run("needs EDM and VP/VE runs on one dataset size and training setting")
    (ds, n, tr), g = max(options, key=lambda kg: (kg[1]["precond"].nunique(), kg[0][1]))
    arms = {p: _arm(p.upper(), g[g["precond"] == p]) for p in ("edm", "vp", "ve") if (g["precond"] == p).any()}
    diffs = [stats.welch_difference(arms["edm"], arms[p]) for p in ("vp", "ve") if p in arms]
    verdict = stats.combine([stats.side_verdict(iv, "<", 0.0) for iv in diffs])
    extra = []
    ve = g[g["precond"] == "ve"]
    if len(ve):
        lo = ve["sample_sigma_min"] if "sample_sigma_min" in ve else pd.Series(dtype=float)
        if lo.isna().all():
            extra.append("VE's sampled sigma range not recorded (results made before samplers clamped to the "
                         "trained range: VE was sampled from sigma 0.002, below its trained 0.02)")
        elif (lo < 0.02 * (1 - 1e-6)).any():
            extra.append(f"VE sampled below its trained sigma_min 0.02 (from {lo.min():.3g})")
    row = Row(arms=list(arms.values()), compared=[_label(iv, f"EDM - {p.upper()}") for iv, p in
                                                   zip(diffs, [p for p in ("vp", "ve") if p in arms])],
              reason="Welch interval of each difference", details=f"{ds} N={int(n)}, {tr}")
    if len(arms) < 3:
        extra.append(f"only {', '.join(a.upper() for a in arms)} run")
    return finish(row, verdict, MIN_SEEDS, budget_reason(df, g["run"], budget), extra)


def _label(iv: Interval, kind: str) -> Interval:
    return Interval(kind, iv.estimate, iv.lo, iv.hi, iv.method)


def _best_fid(df: pd.DataFrame) -> pd.DataFrame:
    """Per run: the best checkpoint's FID when the run has an FID curve, else its final FID."""
    final = per_run(df, "fid")
    curve = df[df["metric"] == "fid_ckpt"].groupby("run")["value"].min()
    if final.empty:
        return final
    final = final.copy()
    final["best"] = final["run"].map(curve)
    final["source"] = np.where(final["best"].notna(), "best checkpoint", "final")
    final["value"] = final["best"].fillna(final["value"])
    return final


@evaluator("S1")
def _s1(df, budget):
    fid = _best_fid(df)
    if fid.empty:
        return not_run("needs FID of masked runs and an unmasked baseline")
    d = fid[(fid["precond"] == "edm") & (fid["target"].fillna("none") == "none")
            & (fid["sigma_dist"].fillna("lognormal") == "lognormal")]
    options = [(k, g) for k, g in _settings(d) if g["mask_ratio"].nunique() >= 2 and (g["mask_ratio"] == 0).any()]
    if not options:
        return not_run("needs FID of masked runs and an unmasked baseline on one dataset size")
    (ds, n, tr), g = max(options, key=lambda kg: (kg[0][1], kg[1]["mask_ratio"].nunique()))
    curves = df[(df["metric"] == "fid_ckpt") & df["run"].isin(g["run"])]
    if len(curves) and set(curves["run"]) == set(g["run"]):
        # best checkpoint over the checkpoints every arm has (a denser curve would get more chances at a low FID)
        common = set.intersection(*(set(c["step"]) for _, c in curves.groupby("run")))
        best = curves[curves["step"].isin(common)].groupby("run")["value"].min()
        g = g.assign(value=g["run"].map(best).fillna(g["value"]))
    arms = [_arm(f"eta={eta:g}", r) for eta, r in sorted(g.groupby("mask_ratio"))]
    base = arms[0]
    ratios = [_label(stats.bootstrap_ratio(a, base), f"{a.name} / eta=0") for a in arms[1:]]
    verdict = stats.combine([stats.competitive_verdict(iv, 1.25) for iv in ratios])
    full = df["n_train"].max()
    extra = [] if n == full else [f"measured at N={int(n)}, not on the full set (N={int(full)})"]
    sources = ", ".join(sorted(set(g["source"])))
    row = Row(arms=arms, compared=ratios, reason=f"{sources} FID; ratio of seed means, bootstrap over seeds; "
                                                  f"competitive = interval under 1.25",
              details=f"{ds} N={int(n)}, {tr}")
    two_t = fid[(fid["mask_ratio"] == 0.98) & (fid["dataset"] == ds) & (fid["n_train"] == n)
                & (fid["training"] != tr)]
    seen = trained_images(df)
    if budget.T_img and len(two_t):
        at_2t = two_t[two_t["run"].map(seen) >= 2 * budget.T_img * (1 - 1e-9)]
        if len(at_2t):
            r2 = stats.bootstrap_ratio(_arm("eta=0.98 at 2T", at_2t), base)
            row.details += f"; eta=0.98 at 2T: {r2.text()} (n={len(at_2t)})"
    return finish(row, verdict, MIN_SEEDS, budget_reason(df, g["run"], budget), extra)


@evaluator("S2")
def _s2(df, budget):
    mem = per_run(df, "mem_fraction_memorized")
    if mem.empty:
        return not_run("needs the memorized fraction of masked and unmasked runs at small N")
    d = mem[(mem["precond"] == "edm") & (mem["target"].fillna("none") == "none")
            & (mem["sigma_dist"].fillna("lognormal") == "lognormal")]
    options = [(k, g) for k, g in _settings(d, ("dataset", "training", "network"))
               if (g["mask_ratio"] == 0).any() and (g["mask_ratio"] > 0).any()]
    if not options:
        return not_run("needs the memorized fraction of masked and unmasked runs on the same N")
    candidates = []
    for (ds, tr, net), g in options:
        for n, gn in g.groupby("n_train"):
            b = gn[gn["mask_ratio"] == 0]["value"]
            if len(b) and (gn["mask_ratio"] > 0).any():
                candidates.append((abs(b.mean() - 0.5), b.mean(), ds, tr, net, n, gn))
    if not candidates:
        return not_run("needs masked and unmasked runs at the same N")
    inside = [c for c in candidates if PARTLY_MEMORIZED[0] <= c[1] <= PARTLY_MEMORIZED[1]]
    dist, bmean, ds, tr, net, n, g = min(inside or candidates, key=lambda c: c[0])
    arms = [_arm(f"eta={eta:g}", r) for eta, r in sorted(g.groupby("mask_ratio"))]
    diffs = [_label(stats.welch_difference(a, arms[0]), f"{a.name} - eta=0") for a in arms[1:]]
    verdict = stats.combine([stats.side_verdict(iv, "<", 0.0) for iv in diffs])
    extra = [] if inside else [
        "no N with the baseline 30-70% memorized (baseline: " + ", ".join(
            f"N={int(c[5])} {c[1]:.2f}" for c in sorted(candidates, key=lambda c: c[5])) + ")"]
    row = Row(arms=arms, compared=diffs, reason="memorized fraction of the final samples (Gu, d1/d2 < 1/3); Welch",
              details=f"{ds} N={int(n)}, {tr} ({net})" + _curve_note(df, g["run"], "mem_fraction_ckpt")
              + _fid_note(df, g))
    return finish(row, verdict, MIN_SEEDS_MEMORIZATION, budget_reason(df, g["run"], budget), extra)


def _curve_note(df, runs, metric) -> str:
    c = df[(df["metric"] == metric) & df["run"].isin(list(runs))]
    if c.empty:
        return ""
    p = c.groupby(["mask_ratio", "step"])["value"].mean().unstack(0).sort_index()
    return "; over training (mean per eta): " + ", ".join(
        f"step {int(s)}: " + "/".join(f"{v:.2f}" for v in p.loc[s].to_numpy()) for s in p.index)


def _fid_note(df, g) -> str:
    f = per_run(df, "fid")
    f = f[f["run"].isin(g["run"])]
    if f.empty:
        return ""
    return "; FID beside: " + ", ".join(f"eta={eta:g} {v:.3g}" for eta, v in f.groupby("mask_ratio")["value"].mean().items())


def _gap_curves(df: pd.DataFrame) -> pd.DataFrame:
    """The gap analysis as one row per (run, step, sigma) with mse_train, mse_heldout, gap, se_gap."""
    g = df[df["metric"].isin(["gap", "mse_train", "mse_heldout", "se_gap"])]
    if g.empty:
        return g
    keys = ["run", "step", "sigma"]
    wide = g.pivot_table(index=keys, columns="metric", values="value", aggfunc="mean").reset_index()
    conf = g.groupby("run")[[c for c in ARM_COLUMNS + ["seed"] if c in g]].first()
    return wide.merge(conf, left_on="run", right_index=True)


@evaluator("S3")
def _s3(df, budget):
    gaps = _gap_curves(df)
    if gaps.empty or "mse_heldout" not in gaps:
        return not_run("needs the held-out denoising loss at several checkpoints (gap analysis) of masked and "
                       "unmasked runs at small N")
    d = gaps[(gaps["precond"] == "edm") & (gaps["target"].fillna("none") == "none")
             & (gaps["sigma_dist"].fillna("lognormal") == "lognormal")]
    conf = d.groupby("run")[[c for c in ARM_COLUMNS + ["seed"] if c in d]].first()
    rows = []
    for run, r in d.groupby("run"):
        curve = pd.Series({s: heldout_loss(rs) for s, rs in r.groupby("step")}).sort_index()
        if len(curve) >= 2:
            rows.append({"run": run, "rise": float(curve.iloc[-1] - curve.min()),
                         "steps": tuple(int(s) for s in curve.index)})
    if not rows:
        return not_run("needs the held-out loss at two or more checkpoints")
    loss = pd.DataFrame(rows).merge(conf, left_on="run", right_index=True)
    options = [(k, g) for k, g in _settings(loss, ("dataset", "n_train", "training", "network"))
               if (g["mask_ratio"] == 0).any() and (g["mask_ratio"] > 0).any()]
    if not options:
        return not_run("needs the held-out loss of masked and unmasked runs at one small N")
    (ds, n, tr, net), g = min(options, key=lambda kg: kg[0][1])
    arms = [_arm(f"rise eta={eta:g}", r, "rise") for eta, r in sorted(g.groupby("mask_ratio"))]
    base = arms[0]
    base_iv = Interval("baseline rise", base.mean, base.lo, base.hi, "t interval over seeds")
    diffs = [_label(stats.welch_difference(a, base), f"{a.name} - eta=0") for a in arms[1:]]
    rises = stats.side_verdict(base_iv, ">", 0.0)
    extra = []
    if rises == INCONCLUSIVE and base.n >= MIN_SEEDS_MEMORIZATION:
        extra.append("the baseline's held-out loss does not rise measurably: no instability to avoid")
    verdict = (DISAGREES if rises == DISAGREES else
               stats.combine([stats.side_verdict(iv, "<", 0.0) for iv in diffs]) if rises == AGREES else INCONCLUSIVE)
    f = df[(df["metric"] == "fid_heldout") & df["run"].isin(g["run"])]
    fid_note = ("; FID vs the held-out split: " + ", ".join(f"eta={e:g} {v:.3g}" for e, v in
                                                            f.groupby("mask_ratio")["value"].mean().items())
                if len(f) else "; FID against the held-out split not measured")
    row = Row(arms=arms, compared=[base_iv] + diffs,
              reason="held-out EDM loss (log-normal weights on the analysis grid) from its minimum over "
                     "checkpoints to the last; Welch",
              details=f"{ds} N={int(n)}, {tr} ({net}), checkpoints {', '.join(map(str, g['steps'].iloc[0]))}" + fid_note)
    return finish(row, verdict, MIN_SEEDS_MEMORIZATION, budget_reason(df, g["run"], budget), extra)


@evaluator("I1")
def _i1(df, budget):
    f = df[(df["metric"] == "fid_ckpt") & (df["precond"] == "edm") & (df["mask_ratio"].fillna(0) == 0)
           & (df["target"].fillna("none") == "none")]
    options = [(k, g) for k, g in _settings(f) if (g["sigma_dist"] == "lognormal").any()
               and (g["sigma_dist"] == "infonoise").any()]
    if not options:
        return not_run("needs FID at several checkpoints of InfoNoise runs and their EDM baseline")
    (ds, n, tr), g = max(options, key=lambda kg: kg[0][1])
    curves = {run: r.groupby("step")["value"].mean() for run, r in g.groupby("run")}
    kind = g.groupby("run")["sigma_dist"].first()
    base_runs = [r for r in curves if kind[r] == "lognormal"]
    info_runs = [r for r in curves if kind[r] == "infonoise"]
    mean_curve = pd.concat([curves[r] for r in base_runs], axis=1).mean(axis=1).sort_index()
    fracs = (0.25, 0.5, 0.75, 1.0)
    last = mean_curve.index.max()
    targets = [float(np.interp(fr * last, mean_curve.index, mean_curve.to_numpy())) for fr in fracs]
    targets[-1] *= 1.05      # the final quality within 5%: seeds that end above the mean curve still reach it

    def steps(runs):
        return np.array([[steps_to_target(curves[r].index, curves[r].to_numpy(), t) for t in targets] for r in runs])
    sb, si = steps(base_runs), steps(info_runs)
    ratio_per_target = [np.mean(si[:, k]) / np.mean(sb[:, k]) for k in range(len(targets))]
    geo = _geo_ratio(sb, si)
    arms = [arm("EDM steps (geo. mean over targets)", np.exp(np.log(sb).mean(1))),
            arm("InfoNoise steps", np.exp(np.log(si).mean(1)))]
    iv = Interval("steps ratio (geometric mean over targets)", geo[0], geo[1], geo[2], "bootstrap over seeds")
    row = Row(arms=arms, compared=[iv],
              reason="steps to reach the baseline's mean FID at 25/50/75% of its last checkpoint and 1.05 x its "
                     "final FID, interpolated between checkpoints; inf = never reached",
              details=f"{ds} N={int(n)}, {tr}; targets " + ", ".join(f"{t:.3g}" for t in targets) + "; ratios "
                      + ", ".join(f"{r:.2f}" for r in ratio_per_target)
                      + f"; checkpoints {', '.join(str(int(s)) for s in mean_curve.index)}; "
                      + _samples_note(g))
    return finish(row, stats.side_verdict(iv, "<", 1.0), MIN_SEEDS, budget_reason(df, g["run"], budget))


def _geo_ratio(sb: np.ndarray, si: np.ndarray, n_boot: int = 4000, seed: int = 0):
    """Geometric mean over targets of mean_steps(InfoNoise) / mean_steps(EDM), with a percentile bootstrap
    over seeds (each arm resampled on its own). inf where an arm's mean is inf."""
    def g(b, i):
        with np.errstate(divide="ignore", invalid="ignore"):
            r = i.mean(0) / b.mean(0)            # inf: InfoNoise never reached it; 0: the baseline never did
            r = r[~np.isnan(r)]                  # neither reached it
            if not len(r) or ((r == 0).any() and np.isinf(r).any()):
                return math.nan
            return float(np.exp(np.log(r).mean()))
    est = g(sb, si)
    if len(sb) < 2 or len(si) < 2:
        return est, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = [g(sb[rng.integers(0, len(sb), len(sb))], si[rng.integers(0, len(si), len(si))]) for _ in range(n_boot)]
    lo, hi = np.quantile(np.array(boot), [0.025, 0.975], method="inverted_cdf")   # order statistics: inf allowed
    return est, float(lo), float(hi)


def _samples_note(g: pd.DataFrame) -> str:
    counts = sorted({int(c) for c in g["num_samples"].dropna()})
    return f"FID of {', '.join(map(str, counts)) or '?'} samples per checkpoint"


@evaluator("T1")
def _t1(df, budget):
    d = df[(df["metric"] == "stf_trace_ratio") & (df["ref_batch"] > 1)]
    if d.empty:
        return not_run("needs the target-variance analysis of the training set")
    n = d["n_train"].max()
    d = d[(d["n_train"] == n) & d["sigma"].between(*MID_SIGMA)]
    se = df[(df["metric"] == "stf_trace_ratio_se") & (df["n_train"] == n) & df["sigma"].between(*MID_SIGMA)]
    compared, verdicts = [], []
    for r, g in sorted(d.groupby("ref_batch")):
        m = float(g["value"].mean())
        s = se[se["ref_batch"] == r]["value"]
        if len(s) == len(g) and s.notna().all():
            half = 1.959964 * math.sqrt(float((s ** 2).sum())) / len(g)    # independent draws per sigma
            iv = Interval(f"|R|={int(r)}", m, m - half, m + half, "Monte Carlo, paired draws")
        else:
            iv = Interval(f"|R|={int(r)}", m, math.nan, math.nan, "no standard error recorded")
        compared.append(iv)
        verdicts.append(stats.side_verdict(iv, "<", 1.0))
    missing = sorted({256, 1024, 4096} - {int(r) for r in d["ref_batch"].unique()})
    extra = [f"|R| = {', '.join(map(str, missing))} not measured"] if missing else []
    if any(math.isnan(iv.lo) for iv in compared):
        extra.append("no Monte Carlo standard error in the table")
    row = Row(compared=compared, reason="STF / baseline trace of the target covariance, mean over "
                                        f"{MID_SIGMA[0]} <= sigma <= {MID_SIGMA[1]}",
              details=f"{d['dataset'].iloc[0]} N={int(n)}")
    verdict = stats.combine(verdicts)
    row.verdict = INCONCLUSIVE if extra else verdict
    if extra:
        alone = f" (the intervals alone would say: {verdict})" if verdict != INCONCLUSIVE else ""
        row.reason = "; ".join(extra) + alone + ". " + row.reason
    return row


@evaluator("T2")
def _t2(df, budget):
    fid = per_run(df, "fid")
    if fid.empty or not (fid["target"] == "stf").any():
        return not_run("needs the final FID of STF runs and their EDM baseline")
    stf = fid[(fid["target"] == "stf") & (fid["mask_ratio"].fillna(0) == 0)
              & (fid["sigma_dist"].fillna("lognormal") == "lognormal") & (fid["precond"] == "edm")]
    options = []
    for (ds, n, tr), g in _settings(stf):
        base = fid[(fid["dataset"] == ds) & (fid["n_train"] == n) & (fid["training"] == tr) & _baseline(fid)]
        if len(base):
            options.append(((ds, n, tr), g, base))
    if not options:
        return not_run("needs STF runs and an EDM baseline with the same data and training")
    (ds, n, tr), g, base = max(options, key=lambda o: o[0][1])
    a, b = _arm("STF", g), _arm("EDM", base)
    diff = _label(stats.welch_difference(a, b), "STF - EDM")
    extra = []
    R = g["ref_batch"] if "ref_batch" in g else pd.Series(dtype=float)
    if R.isna().all():
        extra.append("|R| of the STF runs not recorded in the table")
    else:
        frac = float(R.max()) / n
        if not PAPER_REF_BATCH[0] <= frac <= PAPER_REF_BATCH[1]:
            extra.append(f"|R|/N = {int(R.max())}/{int(n)} = {frac:.2g}, outside the paper's 2-8%"
                         + (" (the target is close to the memorizing ideal denoiser)" if frac > 0.08 else ""))
    row = Row(arms=[a, b], compared=[diff], reason="final FID; Welch", details=f"{ds} N={int(n)}, {tr}")
    return finish(row, stats.side_verdict(diff, "<", 0.0), MIN_SEEDS,
                  budget_reason(df, list(g["run"]) + list(base["run"]), budget), extra)


@evaluator("K1")
def _k1(df, budget):
    gaps = _gap_curves(df)
    if gaps.empty:
        return not_run("needs the per-sigma gap at several checkpoints of runs of two widths")
    d = gaps[_baseline(gaps)]
    if d.empty:
        return not_run("needs the gap analysis of EDM baseline runs")
    per = (d.groupby(["run", "step"]).apply(intermediate_gap, include_groups=False).rename("gap").reset_index())
    conf = d.groupby("run")[[c for c in ARM_COLUMNS + ["seed"] if c in d]].first()
    per = per.merge(conf, left_on="run", right_index=True)
    first, last = per.groupby("run")["step"].transform("min"), per.groupby("run")["step"].transform("max")
    growth = (per[per["step"] == last].set_index("run")["gap"] - per[per["step"] == first].set_index("run")["gap"])
    runs = conf.assign(growth=growth, last_gap=per[per["step"] == last].set_index("run")["gap"],
                       last_step=per.groupby("run")["step"].max())
    runs = runs[runs["growth"].notna()]
    from ..presets import UNET_PRESETS
    width = lambda net: UNET_PRESETS.get(net, {}).get("model_channels", 0)
    # a setting: one dataset size and one training length; widths are compared only within a setting, and
    # when some setting has two widths (section 6: N in {1k, 3k}) only those settings are judged
    settings = [(k, g) for k, g in runs.groupby(["dataset", "n_train", "last_step"])]
    with_widths = [(k, g) for k, g in settings if g["network"].nunique() >= 2]
    arms, compared, verdicts = [], [], []
    for (ds, n, _), g in (with_widths or settings):
        nets = sorted(g["network"].dropna().unique(), key=width)
        for net in nets:
            a = _arm(f"N={int(n)} {net}: gap growth", g[g["network"] == net], "growth")
            arms.append(a)
            iv = Interval(a.name, a.mean, a.lo, a.hi, "t interval over seeds")
            verdicts.append(stats.side_verdict(iv, ">", 0.0))
        if len(nets) >= 2:
            wide, narrow = (_arm(f"N={int(n)} {x}: last gap", g[g["network"] == x], "last_gap") for x in (nets[-1], nets[0]))
            iv = _label(stats.welch_difference(wide, narrow), f"N={int(n)} gap {nets[-1]} - {nets[0]}")
            compared.append(iv)
            verdicts.append(stats.side_verdict(iv, ">", 0.0))
    runs = pd.concat([g for _, g in (with_widths or settings)]) if arms else runs
    if not arms:
        return not_run("needs the gap at two or more checkpoints")
    extra = [] if compared else ["one width only: the width effect is not measured"]
    mem = df[(df["metric"] == "mem_fraction_ckpt") & df["run"].isin(runs.index)]
    note = ""
    if len(mem):
        m = mem.sort_values("step").groupby("run")["value"].agg(["first", "last"])
        m = m.join(runs[["n_train", "network"]])
        note = "; sample memorized fraction first -> last checkpoint: " + ", ".join(
            f"N={int(k[0])} {k[1]} {v['first']:.2f} -> {v['last']:.2f}"
            for k, v in m.groupby(["n_train", "network"])[["first", "last"]].mean().iterrows())
    row = Row(arms=arms, compared=compared, reason="mean held-out - training MSE over 0.2 <= sigma <= 5: last minus "
                                                   "first analysed checkpoint per run (t over seeds), widths at the "
                                                   "last checkpoint (Welch)",
              details=f"{runs['dataset'].iloc[0]}" + note)
    return finish(row, stats.combine(verdicts), MIN_SEEDS_MEMORIZATION, budget_reason(df, list(runs.index), budget),
                  extra)


def _significant_runs(df: pd.DataFrame):
    """(gap curves at each run's last analysed step, runs whose gap is significant, z per run)."""
    gaps = _gap_curves(df)
    if gaps.empty:
        return gaps, [], {}
    last = gaps[gaps["step"] == gaps.groupby("run")["step"].transform("max")]
    z = {run: gap_significance(g) for run, g in last.groupby("run")}
    return last, [r for r, v in z.items() if v > GAP_Z], z


@evaluator("K2")
def _k2(df, budget):
    last, sig, z = _significant_runs(df)
    if last.empty:
        return not_run("needs the per-sigma gap at analysed checkpoints")
    kinds, peaks, lam_peaks = [], [], []
    for run in sig:
        g = last[last["run"] == run]
        p = weighted_gap_peak(g, "relative")
        kinds.append(1 if p["interior"] and p["margin_lo"] > 0 else -1 if not p["interior"] else 0)
        peaks.append(p["peak_sigma"])
        lam_peaks.append(weighted_gap_peak(g, "lambda")["peak_sigma"])
    verdict = (AGREES if kinds and all(k == 1 for k in kinds) else
               DISAGREES if kinds and all(k == -1 for k in kinds) else INCONCLUSIVE)
    row = Row(compared=[Interval(f"{kinds.count(1)} clear interior peaks, {kinds.count(-1)} at an end, "
                                 f"{kinds.count(0)} unclear, of {len(kinds)} runs", math.nan, math.nan, math.nan)],
              reason=f"relative gap = gap / training MSE at the last checkpoint; runs with max gap / s.e. > {GAP_Z:g}; "
                     "clear = interior peak above both ends by 1.96 s.e.",
              details=f"{len(sig)} of {len(z)} runs significant; relative-gap peaks at sigma "
                      + (", ".join(f"{s:.2g}" for s in sorted(peaks)) or "-")
                      + "; lambda-weighted peaks at sigma " + (", ".join(f"{s:.2g}" for s in sorted(lam_peaks)) or "-"))
    if not sig:
        row.compared = []
        row.verdict, row.reason = INCONCLUSIVE, "no run has a significant gap (max gap / s.e. <= 3): nothing overfits " \
                                                "measurably. " + row.reason
        return row
    few = [] if len(sig) >= MIN_SEEDS_MEMORIZATION else [f"n = {len(sig)} < {MIN_SEEDS_MEMORIZATION} significant runs"]
    return finish(row, verdict, MIN_SEEDS_MEMORIZATION, budget_reason(df, sig, budget), few)


@evaluator("K3")
def _k3(df, budget):
    last, sig, _ = _significant_runs(df)
    t = df[df["metric"].isin(["traj_w_max_traj", "traj_w_max_train", "traj_r_traj", "traj_r_train"])]
    if t.empty:
        return not_run("needs the trajectory analysis")
    if not sig:
        return Row(verdict=INCONCLUSIVE, reason="no run has a significant gap: the sigma where overfitting peaks "
                                                "is not defined",
                   needs=["a run that overfits measurably (smaller N or longer training)"])
    has_w = t["metric"].eq("traj_w_max_traj").any()
    vals, notes = [], []
    for run in sig:
        peak = weighted_gap_peak(last[last["run"] == run], "relative")["peak_sigma"]
        tr = t[t["run"] == run].pivot_table(index="sigma", columns="metric", values="value")
        if tr.empty:
            continue
        s = tr.index[np.argmin(np.abs(np.log(tr.index.to_numpy(dtype=float)) - math.log(peak)))]
        at = tr.loc[s]
        if has_w and "traj_w_max_traj" in tr:
            vals.append(math.log(at["traj_w_max_traj"] / at["traj_w_max_train"]))
            notes.append(f"{_short(run)} sigma {s:.2g}: w_max {at['traj_w_max_traj']:.2g} vs {at['traj_w_max_train']:.2g}")
        else:
            notes.append(f"{_short(run)} sigma {s:.2g}: r_traj/r_train {at['traj_r_traj'] / at['traj_r_train']:.2f}")
    if not has_w:
        return Row(verdict=INCONCLUSIVE, reason="the posterior concentration was not measured (trajectory analysis "
                                                "made before it); nearest-distance ratios at the gap's peak sigma "
                                                "are shown instead, and they only restate that samples are novel",
                   details="; ".join(notes[:4]), needs=["the trajectory analysis rerun at the current code (it "
                                                        "measures the posterior concentration)"])
    a = arm("log(w_max traj / w_max train)", vals)
    iv = Interval("mean log ratio", a.mean, a.lo, a.hi, "t interval over runs")
    row = Row(arms=[a], compared=[iv], reason="at each significant run's relative-gap peak sigma (nearest sampler "
                                               "step), medians over points", details="; ".join(notes[:4]))
    return finish(row, stats.side_verdict(iv, "<", 0.0), MIN_SEEDS_MEMORIZATION, budget_reason(df, sig, budget))


@evaluator("G1")
def _g1(df, budget):
    mem = per_run(df, "mem_fraction_memorized")
    if mem.empty:
        return not_run("needs the memorized fraction of the EDM baseline at several N")
    d = mem[_baseline(mem)]
    options = [(k, g) for k, g in _settings(d, ("dataset", "training", "network")) if g["n_train"].nunique() >= 2]
    if not options:
        return not_run("needs the memorized fraction of the EDM baseline at two or more N with the same training")
    # the setting where the baseline memorizes (without memorization there is nothing to fall), then most N
    (ds, tr, net), g = max(options, key=lambda kg: (kg[1]["value"].max() > 0, kg[1]["n_train"].nunique()))
    arms = [_arm(f"N={int(n)}", r) for n, r in sorted(g.groupby("n_train"))]
    x, y = np.log10(g["n_train"].to_numpy(dtype=float)), g["value"].to_numpy(dtype=float)
    iv = _slope(x, y)
    row = Row(arms=arms, compared=[iv], reason="least-squares slope of the memorized fraction (Gu, d1/d2 < 1/3) on "
                                               "log10 N over runs, t interval with runs - 2 dof",
              details=f"{ds}, {tr} ({net})" + _toy_note(df))
    extra = [] if g["value"].max() > 0 else ["no memorization at any N: nothing can fall"]
    return finish(row, stats.side_verdict(iv, "<", 0.0), MIN_SEEDS_MEMORIZATION, budget_reason(df, g["run"], budget),
                  extra)


def _slope(x: np.ndarray, y: np.ndarray) -> Interval:
    from scipy import stats as st
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return Interval("slope per decade", math.nan, math.nan, math.nan, "needs >= 3 runs at >= 2 N")
    b, a0 = np.polyfit(x, y, 1)
    resid = y - (a0 + b * x)
    se = math.sqrt((resid ** 2).sum() / (n - 2) / ((x - x.mean()) ** 2).sum())
    half = float(st.t.ppf(0.975, n - 2)) * se
    return Interval("slope per decade", float(b), b - half, b + half, f"OLS, {n - 2} dof")


def _toy_note(df: pd.DataFrame) -> str:
    """The 2D toy's chance-corrected Gu fraction vs N (supplementary; not a decider)."""
    t = df[(df["metric"] == "toy_fraction_gu_corrected") & (df.get("factor") == "n_train")] if "factor" in df else df.iloc[:0]
    t = t[t["model"] == "mlp"] if "model" in t else t
    if t.empty:
        return ""
    m = t.groupby("toy_n")["value"].mean()
    return "; 2D toy, Gu fraction chance-corrected: " + ", ".join(f"N={int(n)} {v:.2f}" for n, v in m.items())


# ------------------------------------------------------------------------------------------ the table
OPTIONAL_COLUMNS = ("run", "eval", "analysis", "dataset", "n_train", "method", "precond", "sigma_dist",
                    "mask_ratio", "target", "training", "network", "seed", "sampling", "sampler", "num_steps", "nfe",
                    "num_samples", "step", "nimg", "sigma", "ref_batch", "model", "factor", "toy_width", "toy_n",
                    "sample_sigma_min", "sample_sigma_max")


def ensure_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Profiles that skip a stage lack its columns; evaluators and figures expect them (as NaN)."""
    missing = [c for c in OPTIONAL_COLUMNS if c not in df.columns]
    return df.assign(**{c: np.nan for c in missing}) if missing else df


def _arms_text(row: Row) -> str:
    return "; ".join(f"{a.name}: {a.text()}" for a in row.arms) or "–"


def _compared_text(row: Row) -> str:
    return "; ".join(iv.text() for iv in row.compared) or "–"


def evaluate(df: pd.DataFrame, budget_img: Optional[float] = None,
             extra: Optional[Dict[str, Callable]] = None) -> Dict[str, Row]:
    df = ensure_columns(df)
    budget = budget_of(df, budget_img)
    evals = {**EVALUATORS, **(extra or {})}
    out = {}
    for cid, *_ in CLAIMS:
        fn = evals.get(cid)
        out[cid] = fn(df, budget) if fn else not_run("no evaluator")
    return out


def claims_table(df: pd.DataFrame, budget_img: Optional[float] = None,
                 extra: Optional[Dict[str, Callable]] = None, rows: Optional[Dict[str, Row]] = None) -> pd.DataFrame:
    """The claims table (one row per claim); `rows`: evaluate()'s result when already computed."""
    rows = rows if rows is not None else evaluate(df, budget_img, extra)
    table = []
    for cid, claim, source, measurement, side in CLAIMS:
        r = rows[cid]
        table.append({"id": cid, "claim": claim, "source": source, "measurement": measurement,
                      "paper expects": side, "arms: mean [95% CI] (n seeds)": _arms_text(r),
                      "compared [95% CI]": _compared_text(r), "verdict": r.verdict,
                      "reason": r.reason + (f" — {r.details}" if r.details else "")})
    return pd.DataFrame(table)
