"""The committed reports regenerate from their committed results, without training: reports/small from its
per-run results and the manifest in reports/small/specs/, reports/toy from its metrics table; and the small
report's claims table decides nothing that the data cannot support."""
import json
from pathlib import Path

import pandas as pd
import pytest

from diffrepro.report.build import build_report
from diffrepro.results import collect, conform

REPO = Path(__file__).resolve().parents[1]
SMALL = REPO / "reports" / "small"


def _claims(text: str) -> str:
    return text.split("## Claims", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)          # the manifests name paths relative to the project folder


def test_small_metrics_regenerate_from_committed_results(in_repo):
    manifest = json.loads(Path("reports/small/specs/aggregate.json").read_text())
    df, skipped = collect(manifest)
    assert skipped == []
    committed = conform(pd.read_parquet("reports/small/metrics.parquet"))
    assert len(df) == len(committed) == 62289        # 169 of them the STF ratio's Monte Carlo s.e.
    cols = ["run", "eval", "metric", "step", "sigma", "sigma_bin", "value"]
    key = lambda d: d[cols].sort_values(cols[:-1], na_position="first").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(df), key(committed), check_dtype=False)


@pytest.mark.parametrize("profile", ["small", "toy"])
def test_committed_report_regenerates(in_repo, tmp_path, profile):
    spec = json.loads(Path(f"reports/{profile}/specs/report.json").read_text())
    df = pd.read_parquet(f"reports/{profile}/metrics.parquet")
    summary = build_report(df, profile, tmp_path, images=spec["images"])
    regenerated = (tmp_path / "report.md").read_text()
    assert _claims(regenerated) == _claims(Path(f"reports/{profile}/report.md").read_text())
    assert summary["claims_filled"] >= 4
    assert "N=300.0" not in regenerated and "step 100.0" not in regenerated
    if profile == "small":
        assert "not run" not in _claims(regenerated)       # every claim row carries measured numbers or the reason
        assert len(list((tmp_path / "figures").glob("samples-*.png"))) == 22


def test_small_report_rows_without_seeds_or_budget_are_inconclusive():
    """Every training run of the `small` profile is 1-2 seeds at 0.5-1.3 Mimg with no pilot to fix the budget:
    no row may agree or disagree, and each says why."""
    from diffrepro.report.claims import claims_table

    table = claims_table(pd.read_parquet(SMALL / "metrics.parquet")).set_index("id")
    assert (table["verdict"] == "inconclusive").all(), table["verdict"].to_dict()
    for cid in ("E2", "S1", "S2", "S3", "I1", "T2", "K1", "G1"):
        reason = table.loc[cid, "reason"]
        assert "n = 1 <" in reason and "not trained to the budget T" in reason, (cid, reason)
    assert "no Heun-256 reference" in table.loc["E1", "reason"]
    assert "|R| = 4096 not measured" in table.loc["T1", "reason"]
    assert "not trained to the budget T" in table.loc["K2", "reason"]
    assert "posterior concentration was not measured" in table.loc["K3", "reason"]
    assert "VE's sampled sigma range not recorded" in table.loc["E2", "reason"]


def test_report_header_names_full_commits_with_their_dirty_flag():
    from diffrepro.report.build import header

    full = "0958f7b22c95" + "a" * 28
    df = pd.DataFrame({"run": ["r", "s"], "eval": [None, None], "git_commit": [full + "-dirty", full],
                       "device": ["cpu", "cpu"]})
    assert f"code: {full}, {full}-dirty;" in header(df)
