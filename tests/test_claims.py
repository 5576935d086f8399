"""Claims evaluators on hand-made metrics tables whose intervals and verdicts are known (methods.md section 6):
each row decides from the interval of its compared quantity, and only with enough seeds, at the budget T,
under its own measurement conditions."""
import math

import numpy as np
import pandas as pd
import pytest

from diffrepro.report.claims import EVALUATORS, PILOT_TRAINING, budget_of, claims_table, ensure_columns

T = 1_000_000          # the budget in training images for these tables


def run_rows(run, *, method="edm", precond="edm", sigma_dist="lognormal", mask=0.0, target="none", n=60000,
             training="claims", network="small", seed=0, nimg=T, ref_batch=np.nan, **metrics):
    """Rows of one run: its training length (a train_loss row) and `metrics` = {name: value or
    [(step, value), ...] or [row dicts, which may name their own metric]} (extra columns via a dict value)."""
    conf = dict(run=run, dataset="fmnist", n_train=n, method=method, precond=precond, sigma_dist=sigma_dist,
                mask_ratio=mask, target=target, training=training, network=network, seed=seed, ref_batch=ref_batch)
    rows = [dict(conf, metric="train_loss", value=1.0, step=nimg / 256, nimg=nimg)]
    for name, v in metrics.items():
        if isinstance(v, dict):
            rows.append(dict(conf, metric=name, **v))
        elif isinstance(v, list):
            for item in v:
                rows.append({**conf, "metric": name, **item} if isinstance(item, dict) else
                            dict(conf, metric=name, step=item[0], value=item[1]))
        else:
            rows.append(dict(conf, metric=name, value=v, sampling="heun-18", num_samples=10000))
    return rows


def verdict(cid, rows, budget=T):
    df = ensure_columns(pd.DataFrame(rows))
    return EVALUATORS[cid](df, budget_of(df, budget))


def test_every_claim_has_a_row_and_an_empty_table_says_not_run():
    table = claims_table(pd.DataFrame({"metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)}))
    assert list(table["id"]) == ["E1", "E2", "S1", "S2", "S3", "I1", "T1", "T2", "K1", "K2", "K3", "G1"]
    assert (table["verdict"] == "not run").all()


# ------------------------------------------------------------------------------------------ E2: seeds, budget, range
def e2_rows(edm=(20, 21, 22), vp=(30, 31, 32), ve=(40, 41, 42), nimg=T, ve_sigma_min=0.02):
    rows = []
    for name, vals in (("edm", edm), ("vp", vp), ("ve", ve)):
        for s, v in enumerate(vals):
            extra = {"value": v, "sampling": "heun-18", "num_samples": 10000}
            if name == "ve":
                extra["sample_sigma_min"] = ve_sigma_min
            rows += run_rows(f"{name}_s{s}_{s:08x}", method=name, precond=name,
                             sigma_dist={"edm": "lognormal", "vp": "vp", "ve": "loguniform"}[name], seed=s,
                             nimg=nimg, fid=extra)
    return rows


def test_e2_agrees_with_three_seeds_at_the_budget_and_shows_the_intervals():
    v = verdict("E2", e2_rows())
    assert v.verdict == "agrees", v
    assert [a.n for a in v.arms] == [3, 3, 3]
    edm = v.arms[0]        # 20, 21, 22: mean 21, sd 1, t(2) = 4.303
    assert edm.lo == pytest.approx(21 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert v.compared[0].kind == "EDM - VP" and v.compared[0].hi < 0
    assert verdict("E2", e2_rows(edm=(40, 41, 42), ve=(20, 21, 22))).verdict == "disagrees"


@pytest.mark.parametrize("kw, reason", [
    (dict(vp=(31.0,)), "n = 1 < 3 (VP)"),
    (dict(nimg=T // 2), "not trained to the budget T"),
    (dict(ve_sigma_min=0.002), "VE sampled below its trained sigma_min 0.02"),
    (dict(ve_sigma_min=np.nan), "VE's sampled sigma range not recorded")])
def test_e2_is_inconclusive_without_seeds_budget_or_the_trained_sigma_range(kw, reason):
    v = verdict("E2", e2_rows(**kw))
    assert v.verdict == "inconclusive" and reason in v.reason, v.reason
    assert "the interval alone would say" in v.reason or kw.get("vp")


def test_e2_without_a_budget_says_t_is_not_fixed():
    v = verdict("E2", e2_rows(), budget=None)
    assert v.verdict == "inconclusive" and "not trained to the budget T (no pilot run in this table)" in v.reason


# ------------------------------------------------------------------------------------------ budget from the pilot
def test_the_pilot_fixes_t_and_runs_below_it_are_inconclusive():
    curve = [(s, f) for s, f in zip([5, 10, 20, 40, 60, 80, 100], [100, 50, 30, 25, 24.5, 24.2, 24.0])]
    pilot = run_rows("pilot_s0_00000000", training=PILOT_TRAINING, nimg=100 * 256, fid_ckpt=curve)
    df = ensure_columns(pd.DataFrame(pilot))
    b = budget_of(df)
    assert b.T_img == 60 * 256 and "step 60" in b.source        # the worked case of test_claim_measures
    rows = e2_rows(nimg=50 * 256) + pilot
    v = verdict("E2", rows, budget=None)
    assert v.verdict == "inconclusive" and "not trained to the budget T (T = 0.0154 Mimg" in v.reason
    assert verdict("E2", e2_rows(nimg=60 * 256) + pilot, budget=None).verdict == "agrees"


# ------------------------------------------------------------------------------------------ S1: competitive margin
def s1_rows(etas):
    rows = []
    for eta, vals in etas.items():
        for s, v in enumerate(vals):
            rows += run_rows(f"m{eta}_s{s}_{s:08x}", method=f"sparse-{eta}", mask=eta, seed=s,
                             fid={"value": v + 5, "sampling": "heun-18", "num_samples": 10000},
                             fid_ckpt=[(100, v + 10), (200, v)])          # best checkpoint = v
    return rows


@pytest.mark.parametrize("masked, expected", [
    ((20.0, 21.0, 20.5), "agrees"),        # ratio ~1.0, interval well under 1.25
    ((30.0, 31.0, 29.0), "disagrees"),     # ratio ~1.46: the interval excludes 1.25 from above
    ((22.0, 27.0, 32.0), "inconclusive")])  # ratio ~1.32 with a wide interval across 1.25
def test_s1_best_checkpoint_ratio_against_the_125_margin(masked, expected):
    v = verdict("S1", s1_rows({0.0: (20.0, 20.5, 19.5), 0.98: masked}))
    assert v.verdict == expected, (v.compared, v.reason)
    assert v.compared[0].kind == "eta=0.98 / eta=0" and "best checkpoint" in v.reason


def test_s1_all_masks_must_stay_competitive():
    v = verdict("S1", s1_rows({0.0: (20.0, 20.5, 19.5), 0.5: (20.0, 20.5, 20.2), 0.98: (30.0, 31.0, 29.0)}))
    assert v.verdict == "disagrees" and len(v.compared) == 2


# ------------------------------------------------------------------------------------------ S2, G1: memorization sweep
def mem_rows(table, mask=0.0, training="sweep"):
    rows = []
    for n, vals in table.items():
        for s, v in enumerate(vals):
            rows += run_rows(f"n{n}_m{mask}_s{s}_{s:08x}", n=n, mask=mask, seed=s, training=training,
                             method="edm" if mask == 0 else f"sparse-{mask}",
                             mem_fraction_memorized={"value": v, "sampling": "heun-18", "num_samples": 10000})
    return rows


def test_s2_uses_the_n_where_the_baseline_is_partly_memorized():
    rows = mem_rows({100: (0.95, 0.97), 1000: (0.50, 0.54)}) + mem_rows({100: (0.9, 0.92), 1000: (0.2, 0.22)}, 0.9)
    v = verdict("S2", rows)
    assert v.verdict == "agrees" and "N=1000" in v.details, v
    assert [a.n for a in v.arms] == [2, 2]
    # only a fully memorizing baseline: no N in 30-70%, inconclusive with the baseline's fractions
    v = verdict("S2", mem_rows({100: (0.95, 0.97)}) + mem_rows({100: (0.5, 0.52)}, 0.9))
    assert v.verdict == "inconclusive" and "no N with the baseline 30-70% memorized (baseline: N=100 0.96)" in v.reason


def test_g1_slope_per_decade_by_hand():
    """(log10 N, fraction): (2; .9, .8), (3; .5, .4), (4; .1, 0): OLS slope -0.4, residuals +-0.05, SSE 0.015,
    se = sqrt(0.015 / 4 / 4) = 0.0306, t(4) = 2.776."""
    v = verdict("G1", mem_rows({100: (0.9, 0.8), 1000: (0.5, 0.4), 10000: (0.1, 0.0)}))
    iv = v.compared[0]
    half = 2.776445 * math.sqrt(0.015 / 4 / 4)
    assert iv.estimate == pytest.approx(-0.4) and iv.hi == pytest.approx(-0.4 + half, rel=1e-5)
    assert v.verdict == "agrees"
    assert verdict("G1", mem_rows({100: (0.1, 0.0), 1000: (0.5, 0.4), 10000: (0.9, 0.8)})).verdict == "disagrees"
    one = verdict("G1", mem_rows({100: (0.9,), 1000: (0.5,), 10000: (0.1,)}))
    assert one.verdict == "inconclusive" and "n = 1 < 2" in one.reason


# ------------------------------------------------------------------------------------------ I1: steps to targets
def i1_rows(base_curves, info_curves):
    rows = []
    for kind, curves in (("lognormal", base_curves), ("infonoise", info_curves)):
        for s, c in enumerate(curves):
            rows += run_rows(f"{kind}_s{s}_{s:08x}", method="edm" if kind == "lognormal" else "infonoise",
                             sigma_dist=kind, seed=s, fid_ckpt=[dict(step=100 * (k + 1), value=v, num_samples=5000)
                                                                for k, v in enumerate(c)])
    return rows


BASE = [(100, 60, 40, 30), (102, 61, 41, 31), (98, 59, 39, 29)]


def test_i1_infonoise_faster_agrees_and_labels_each_arms_seeds():
    faster = [(70, 40, 30, 26), (72, 41, 31, 27), (68, 39, 29, 25)]
    v = verdict("I1", i1_rows(BASE, faster))
    assert v.verdict == "agrees" and v.compared[0].hi < 1, v
    assert [a.n for a in v.arms] == [3, 3]
    assert verdict("I1", i1_rows(BASE, [(c[0] + 40, c[1] + 30, c[2] + 20, c[3] + 15) for c in BASE])).verdict == \
        "disagrees"
    # one InfoNoise seed beside two baseline seeds: the row says so, per arm (not "3 seeds")
    v = verdict("I1", i1_rows(BASE[:2], faster[:1]))
    assert v.verdict == "inconclusive" and "(n=2)" in v.arms[0].text() and "(n=1)" in v.arms[1].text()
    assert "n = 1 < 3" in v.reason


# ------------------------------------------------------------------------------------------ E1: Heun-256 reference
def e1_rows(ref=20.0, seeds=3):
    rows = []
    heun = {9: 30.0, 17: 21.0, 35: 20.2, 63: 20.05}          # within 2% from NFE ~17-35
    euler = {8: 19.9, 16: 26.0, 32: 22.0, 64: 20.9, 128: 20.2, 256: 20.1}   # lucky at 8, then far, close from ~64
    for s in range(seeds):
        evs = [dict(sampler="heun", nfe=n, num_steps=(n + 1) // 2, value=v, sampling=f"heun-{(n + 1) // 2}")
               for n, v in heun.items()]
        evs += [dict(sampler="euler", nfe=n, num_steps=n, value=v, sampling=f"euler-{n}") for n, v in euler.items()]
        if ref is not None:
            evs.append(dict(sampler="heun", nfe=511, num_steps=256, value=ref, sampling="heun-256"))
        rows += run_rows(f"edm_s{s}_{s:08x}", seed=s, fid=[{**e, "num_samples": 10000} for e in evs])
    return rows


def test_e1_decides_against_the_heun_256_reference_not_eulers_best_fid():
    v = verdict("E1", e1_rows())
    assert v.verdict == "agrees", v
    heun, euler = v.arms
    assert 17 < heun.mean < 35 and 64 < euler.mean < 128     # Euler's lucky 8-NFE point does not count
    v = verdict("E1", e1_rows(ref=None))
    assert v.verdict == "inconclusive" and "no Heun-256 reference" in v.reason


# ------------------------------------------------------------------------------------------ T1, T2
def t1_rows(ratios, se=0.01, ref_batches=(256, 1024, 4096)):
    rows = []
    for r in ref_batches:
        for sigma in (0.6, 1.0, 1.7, 3.0):
            for metric, v in (("stf_trace_ratio", ratios[r]), ("stf_trace_ratio_se", se)):
                rows.append(dict(metric=metric, value=v, sigma=sigma, ref_batch=r, n_train=60000, dataset="fmnist"))
    return rows


def test_t1_needs_every_reference_batch_size_and_an_interval():
    assert verdict("T1", t1_rows({256: 0.8, 1024: 0.7, 4096: 0.6})).verdict == "agrees"
    assert verdict("T1", t1_rows({256: 0.99, 1024: 0.7, 4096: 0.6}, se=0.05)).verdict == "inconclusive"
    v = verdict("T1", t1_rows({256: 0.8, 1024: 0.7}, ref_batches=(256, 1024)))
    assert v.verdict == "inconclusive" and "|R| = 4096 not measured" in v.reason


def t2_rows(ref_batch, n=60000):
    rows = []
    for s, (a, b) in enumerate([(18, 20), (18.5, 20.5), (17.5, 19.5)]):
        rows += run_rows(f"stf_s{s}_{s:08x}", method="stf", target="stf", ref_batch=ref_batch, seed=s, n=n,
                         fid={"value": a, "sampling": "heun-18", "num_samples": 10000})
        rows += run_rows(f"edm_s{s}_{s:08x}", seed=s, n=n, fid={"value": b, "sampling": "heun-18", "num_samples": 10000})
    return rows


def test_t2_only_in_the_papers_reference_batch_regime():
    assert verdict("T2", t2_rows(4096)).verdict == "agrees"
    v = verdict("T2", t2_rows(1024, n=2000))
    assert v.verdict == "inconclusive" and "|R|/N = 1024/2000 = 0.51, outside the paper's 2-8%" in v.reason
    assert "|R| of the STF runs not recorded" in verdict("T2", t2_rows(np.nan)).reason


# ------------------------------------------------------------------------------------------ gap-based: K1, K2, K3, S3
SIG = np.exp(np.linspace(math.log(0.002), math.log(80), 12))


def gap_rows(peak=0.01, at_end=False, steps=(1000, 2000), growth=True, mse_scale=1.0, se=0.01):
    """Gap curves per step: training MSE of a Gaussian, a gap bump at sigma ~ 0.25-0.65 (or at the low end),
    standard errors a fixed fraction `se` of the training MSE (errors scale with the error level)."""
    out = []
    for k, step in enumerate(steps):
        amp = peak * ((k + 1) / len(steps) if growth else 1.0)
        for sigma in SIG:
            mse_t = 0.25 * sigma ** 2 / (0.25 + sigma ** 2) * mse_scale
            bump = amp if (sigma < 0.01 if at_end else 0.2 < sigma < 0.7) else 0.0
            gap = bump * (mse_t / 0.02 if at_end else 1.0)
            for metric, v in (("mse_train", mse_t), ("mse_heldout", mse_t + gap), ("gap", gap),
                              ("se_gap", se * mse_t)):
                out.append(dict(sigma=sigma, step=step, value=v, metric=metric))
    return out


def gap_run(run, seed=0, network="small", mask=0.0, n=1000, **kw):
    return run_rows(run, seed=seed, network=network, mask=mask, n=n, method="edm" if mask == 0 else "sparse",
                    training="sweep", gap_curve=gap_rows(**kw))


def test_k2_interior_peak_on_significant_runs():
    runs = gap_run("a_s0_00000000", 0) + gap_run("a_s1_00000001", 1)
    assert verdict("K2", runs).verdict == "agrees"
    ends = gap_run("a_s0_00000000", 0, at_end=True) + gap_run("a_s1_00000001", 1, at_end=True)
    assert verdict("K2", ends).verdict == "disagrees"
    flat = gap_run("a_s0_00000000", 0, peak=1e-5) + gap_run("a_s1_00000001", 1, peak=1e-5)
    v = verdict("K2", flat)
    assert v.verdict == "inconclusive" and "no run has a significant gap" in v.reason


def test_k1_gap_grows_with_steps_and_width():
    rows = []
    for s in (0, 1):
        rows += gap_run(f"n_s{s}_0000000{s}", s, network="small", peak=0.01 + 0.001 * s)
        rows += gap_run(f"w_s{s}_0000000{s}", s, network="medium", peak=0.03 + 0.001 * s)
    v = verdict("K1", rows)
    assert v.verdict == "agrees", (v.arms, v.compared, v.reason)
    assert any("medium - small" in iv.kind and iv.lo > 0 for iv in v.compared)
    # a full-set run of one width (nothing to overfit, no width axis) is not part of the width comparison
    full = [r for s in (0, 1) for r in gap_run(f"f_s{s}_0000000{s}", s, n=60000, growth=False, peak=1e-3 * (1 + s))]
    v = verdict("K1", rows + full)
    assert v.verdict == "agrees" and not any("N=60000" in a.name for a in v.arms)
    flat = []
    for s in (0, 1):
        flat += gap_run(f"n_s{s}_0000000{s}", s, network="small", growth=False, peak=0.01 + 0.001 * s)
        flat += gap_run(f"w_s{s}_0000000{s}", s, network="medium", growth=False, peak=0.011 - 0.001 * s)
    assert verdict("K1", flat).verdict == "inconclusive"


def test_k3_posterior_concentration_at_the_gap_peak():
    rows = []
    for s in (0, 1):
        run = f"a_s{s}_0000000{s}"
        rows += gap_run(run, s)
        traj = []
        for sigma in SIG:
            near_peak = 0.2 < sigma < 0.7
            traj += [dict(sigma=sigma, step=0, metric="traj_w_max_traj", value=0.2 if near_peak else 0.9),
                     dict(sigma=sigma, step=0, metric="traj_w_max_train", value=0.8 + 0.01 * s)]
        rows += run_rows(run, seed=s, n=1000, training="sweep", traj=traj)
    v = verdict("K3", rows)
    assert v.verdict == "agrees" and v.compared[0].hi < 0, v


def test_s3_held_out_loss_rises_for_the_baseline_only():
    rows = []
    for s in (0, 1):
        # baseline: held-out MSE grows at the last checkpoint (rise); masked: it does not
        base = gap_rows(steps=(1000, 2000, 3000))
        for r in base:
            if r["metric"] == "mse_heldout" and r["step"] == 3000:
                r["value"] *= 1.5 + 0.01 * s
        rows += run_rows(f"b_s{s}_0000000{s}", seed=s, n=100, training="sweep", g=base)
        rows += run_rows(f"m_s{s}_0000000{s}", seed=s, n=100, training="sweep", mask=0.9, method="sparse",
                         g=gap_rows(steps=(1000, 2000, 3000)))
    v = verdict("S3", rows)
    assert v.verdict == "agrees", (v.arms, v.compared, v.reason)
    assert "FID against the held-out split not measured" in v.details
