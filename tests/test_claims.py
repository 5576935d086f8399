"""Claims evaluators on hand-made metrics tables whose verdicts are known."""
import pandas as pd
import pytest

from diffrepro.report.claims import claims_table, ensure_columns, EVALUATORS


def _ckpt_rows(run, fids, steps=(500, 1000, 1500, 2000), n=2000, mask=0.0, sigma_dist="lognormal", seed=0,
               method="edm"):
    return [dict(run=run, metric="fid_ckpt", value=v, step=s, dataset="fmnist", n_train=n, training="small-gpu",
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


def test_every_claim_has_a_row_and_an_empty_table_says_not_run():
    table = claims_table(pd.DataFrame({"metric": pd.Series(dtype=str), "value": pd.Series(dtype=float)}))
    assert list(table["id"]) == ["E1", "E2", "S1", "S2", "S3", "I1", "T1", "T2", "K1", "K2", "K3", "G1"]
    assert (table["verdict"] == "not run").all()
