"""Claims evaluators on hand-made metrics tables whose verdicts are known."""
import pandas as pd
import pytest

from diffrepro.report.claims import claims_table, ensure_columns, EVALUATORS


def _ckpt_rows(run, fids, steps=(500, 1000, 1500, 2000), n=2000, mask=0.0, sigma_dist="lognormal", seed=0,
               method="edm", training="small-gpu"):
    return [dict(run=run, metric="fid_ckpt", value=v, step=s, dataset="fmnist", n_train=n, training=training,
                 method=method, precond="edm", sigma_dist=sigma_dist, mask_ratio=mask, target="none", seed=seed,
                 num_samples=500) for s, v in zip(steps, fids)]


def _verdict(cid, rows):
    return EVALUATORS[cid](ensure_columns(pd.DataFrame(rows)))


@pytest.mark.parametrize("info, verdict, ratio", [
    ([90, 30, 28, 27], "agrees", "ratio 0.67"),        # reaches the baseline's final 30 at step 1000 vs 1500
    ([90, 60, 45, 35], "disagrees", "not within 2000"),
    ([90, 60, 30, 25], "inconclusive", "ratio 1.00"),   # same checkpoint as the baseline
])
def test_i1_steps_to_the_baseline_fid(info, verdict, ratio):
    rows = _ckpt_rows("base", [100, 50, 30, 30]) + _ckpt_rows("info", info, sigma_dist="infonoise", method="infonoise")
    v = _verdict("I1", rows)
    assert v.verdict == verdict and ratio in v.value, v


def test_i1_not_run_without_an_infonoise_curve():
    assert _verdict("I1", _ckpt_rows("base", [100, 50, 30, 30])).verdict == "not run"


@pytest.mark.parametrize("base, masked, verdict", [
    ([80, 40, 50, 60], [90, 50, 45, 44], "agrees"),        # baseline 60 > 1.1 x 40; masked ends at its best
    ([80, 40, 50, 60], [90, 40, 50, 70], "disagrees"),     # both worsen late
    ([80, 40, 38, 37], [90, 50, 45, 44], "inconclusive"),  # baseline never worsens
])
def test_s3_late_instability(base, masked, verdict):
    rows = _ckpt_rows("base", base) + _ckpt_rows("masked", masked, mask=0.9, method="sparse-90")
    assert _verdict("S3", rows).verdict == verdict


def test_s3_uses_the_smallest_size_with_both_runs():
    rows = (_ckpt_rows("b500", [80, 40, 50, 60], n=500) + _ckpt_rows("m500", [90, 50, 45, 44], n=500, mask=0.9)
            + _ckpt_rows("b60k", [80, 40, 38, 37], n=60000) + _ckpt_rows("m60k", [90, 50, 45, 44], n=60000, mask=0.9))
    v = _verdict("S3", rows)
    assert v.verdict == "agrees" and v.value.startswith("N=500")


def test_s3_does_not_average_curves_of_different_training_settings():
    rows = (_ckpt_rows("b", [80, 40, 50, 60], n=100) + _ckpt_rows("m", [90, 50, 45, 44], n=100, mask=0.9)
            + _ckpt_rows("b-long", [80, 30, 20, 10], n=100, training="long"))    # another setting's baseline
    v = _verdict("S3", rows)
    assert v.verdict == "agrees" and v.value.startswith("N=100 (small-gpu): eta=0: FID 80 -> min 40 -> last 60"), v


def test_every_claim_has_a_row_and_an_empty_table_says_not_run():
    table = claims_table(pd.DataFrame({"metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)}))
    assert list(table["id"]) == ["E1", "E2", "S1", "S2", "S3", "I1", "T1", "T2", "K1", "K2", "K3", "G1"]
    assert (table["verdict"] == "not run").all()


def _row(run, metric, value, n=2000, training="small-gpu", method="edm", mask=0.0, target="none",
         sigma_dist="lognormal", network="small", **kw):
    return dict(run=run, metric=metric, value=value, dataset="fmnist", n_train=n, training=training, method=method,
                precond="edm", sigma_dist=sigma_dist, mask_ratio=mask, target=target, seed=0, network=network,
                sampling="heun-18", **kw)


def test_t2_compares_stf_alone_not_combinations():
    rows = [_row("b", "fid", 20.0), _row("stf", "fid", 15.0, method="stf", target="stf"),
            _row("combo", "fid", 40.0, method="combo", target="stf", mask=0.5, sigma_dist="infonoise")]
    v = _verdict("T2", rows)
    assert v.verdict == "agrees" and "STF 15" in v.value and "(n=1)" in v.spread


def test_g1_uses_the_training_setting_that_memorizes():
    rows = [_row(f"s{n}", "mem_fraction_memorized", 0.0, n=n) for n in (500, 2000, 60000)]
    rows += [_row("m100", "mem_fraction_memorized", 0.9, n=100, training="mem"),
             _row("m500", "mem_fraction_memorized", 0.3, n=500, training="mem")]
    v = _verdict("G1", rows)
    assert v.verdict == "agrees" and v.value.startswith("fmnist, mem: N=100: 0.900, N=500: 0.300"), v
    rows[-2]["value"], rows[-1]["value"] = 0.3, 0.9   # more memorization on more data: the claim fails
    assert _verdict("G1", rows).verdict == "disagrees"


def test_s2_picks_the_memorizing_baseline_and_shows_the_curve():
    rows = [_row("b", "mem_fraction_memorized", 0.0), _row("m", "mem_fraction_memorized", 0.0, mask=0.9)]
    rows += [_row("b100", "mem_fraction_memorized", 0.8, n=100, training="mem"),
             _row("m100", "mem_fraction_memorized", 0.2, n=100, training="mem", mask=0.9)]
    rows += [_row("b100", "mem_fraction_ckpt", v, n=100, training="mem", step=s) for s, v in ((1, 0.5), (2, 0.8))]
    rows += [_row("m100", "mem_fraction_ckpt", v, n=100, training="mem", mask=0.9, step=s) for s, v in ((1, 0.1), (2, 0.2))]
    v = _verdict("S2", rows)
    assert v.verdict == "agrees" and v.value.startswith("N=100 (mem)")
    assert "step 1 0.50/0.10, step 2 0.80/0.20" in v.value


@pytest.mark.parametrize("wide, verdict", [((0.2, 0.9), "agrees"), ((0.0, 0.1), "disagrees")])
def test_k1_compares_widths_on_the_same_checkpoints(wide, verdict):
    rows = [_row("narrow_s0_aa", "mem_fraction_ckpt", v, n=100, step=s, network="small") for s, v in ((1, 0.1), (2, 0.5))]
    rows += [_row("wide_s0_bb", "mem_fraction_ckpt", v, n=100, step=s, network="medium") for s, v in zip((1, 2), wide)]
    v = _verdict("K1", rows)
    assert v.verdict == verdict and "small 0.30 vs medium" in v.value, v


def test_k3_judges_trajectories_of_generalizing_runs_only():
    def traj(run, ratio, mem):
        return [_row(run, "traj_r_traj", ratio, sigma=1.0), _row(run, "traj_r_train", 1.0, sigma=1.0),
                _row(run, "mem_fraction_memorized", mem)]
    v = _verdict("K3", traj("gen_s0_aa", 1.3, 0.0) + traj("mem_s0_bb", 1.0, 0.9))
    assert v.verdict == "agrees" and "memorizing runs (1): r_traj/r_train median 1.00" in v.value
    assert _verdict("K3", traj("gen_s0_aa", 1.0, 0.0)).verdict == "disagrees"
    assert _verdict("K3", traj("mem_s0_bb", 1.0, 0.9)).verdict == "inconclusive"
