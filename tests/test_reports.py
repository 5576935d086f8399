"""The committed GPU report regenerates from its committed results, without training, and its claims table
decides nothing that the data cannot support."""
import shutil
import sys

import pandas as pd

from pipeline_helpers import REPO, make_project, run

SMALL = REPO / "reports" / "small"


def _claims(text: str) -> str:
    return text.split("## Claims", 1)[1].split("\n## ", 1)[0]


def test_small_report_regenerates_from_committed_results(tmp_path):
    """The report stage on the committed metrics table (and the committed per-run images) writes the committed
    claims table. (Re-aggregating results/ needs the params of the commit that trained them: the InfoNoise
    run's parameters have since moved from fractions of the run to training images.)"""
    project = make_project(tmp_path / "p")
    shutil.copytree(SMALL / "results", project / "results")
    run([sys.executable, "-m", "stages.report", "--profile", "small", "--metrics", SMALL / "metrics.parquet",
         "--out", "reports/small"], project)
    regenerated = (project / "reports/small/report.md").read_text()
    assert _claims(regenerated) == _claims((SMALL / "report.md").read_text())
    assert "not run" not in _claims(regenerated)       # every claim row carries measured numbers or the reason


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
