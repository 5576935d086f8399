""""What we found" says in plain words what the claims table decides: each claim in the group of its verdict,
with its number, and for an open claim what would decide it (seeds, budget, the row's own condition, or an
interval that straddles the paper's threshold)."""
from pathlib import Path

import pandas as pd

from diffrepro.report.build import build_report
from diffrepro.report.claims import CLAIMS, NOT_RUN, Row, finish, not_run
from diffrepro.report.findings import headline, what_we_found
from diffrepro.report.stats import AGREES, DISAGREES, INCONCLUSIVE, Interval, arm

REPO = Path(__file__).resolve().parents[1]


def _row(verdict, n, required=3, budget_text=None, extra=(), lo=-2.0, hi=-1.0):
    a, b = arm("EDM", [10.0 + i for i in range(n)]), arm("VP", [12.0 + i for i in range(n)])
    row = Row(arms=[a, b], compared=[Interval("EDM - VP", (lo + hi) / 2, lo, hi, "Welch")])
    return finish(row, verdict, required, budget_text, extra)


def test_finish_says_what_would_decide_a_gated_row():
    r = _row(AGREES, 1, budget_text="not trained to the budget T (no pilot run in this table)")
    assert r.verdict == INCONCLUSIVE and r.leaning == AGREES
    assert r.needs == ["more seeds (3 per arm; fewest now 1)",
                       "a pilot run that fixes the budget T (no pilot run in this table), then training every run "
                       "to it"]
    r = _row(DISAGREES, 3, budget_text="not trained to the budget T (T = 2 Mimg; 1.5 Mimg: s0)",
             extra=["VE sampled below its trained sigma_min"])
    assert r.needs == ["training every run to the budget T", "VE sampled below its trained sigma_min"]
    r = _row(INCONCLUSIVE, 3, lo=-1.0, hi=0.5)               # enough seeds and budget: the interval straddles
    assert r.verdict == INCONCLUSIVE and r.leaning == ""
    assert r.needs == ["more seeds: the 95% interval of EDM - VP includes the paper's threshold"]
    r = _row(AGREES, 3)                                       # decided: nothing needed
    assert r.verdict == AGREES and r.needs == []


def test_what_we_found_groups_claims_by_verdict_with_their_numbers():
    ids = [c[0] for c in CLAIMS]
    rows = {cid: not_run("needs the final FID of EDM, VP and VE runs") for cid in ids}
    rows["E2"] = _row(AGREES, 3)
    rows["T2"] = _row(DISAGREES, 3, lo=1.0, hi=3.0)
    rows["S1"] = _row(AGREES, 2)
    groups, scope = what_we_found(rows, ["fmnist"])
    titles = [t for t, _ in groups]
    assert titles == [f"Reproduces at this budget (1 of {len(ids)})", f"Does not reproduce (1 of {len(ids)})",
                      f"Open (1 of {len(ids)})", f"Not run ({len(ids) - 3} of {len(ids)})"]
    (e2,), (t2,), (s1,), not_run_lines = (lines for _, lines in groups)
    assert e2.startswith("E2 (EDM Table 2): ") and e2.endswith("; EDM - VP -1.5 [-2, -1].")
    assert t2.startswith("T2 (STF): ") and "EDM - VP 2 [1, 3]" in t2
    assert s1.endswith("Would decide it: more seeds (3 per arm; fewest now 2) (the interval alone says: agrees).")
    assert all(line.endswith(". Needs the final FID of EDM, VP and VE runs.") for line in not_run_lines)
    assert scope.startswith("Measured on fmnist.")
    top = {h["id"]: h for h in headline(rows)}
    assert top["E2"] == {"id": "E2", "claim": CLAIMS[1][1], "verdict": AGREES, "number": "EDM - VP -1.5 [-2, -1]"}
    assert top["K1"]["verdict"] == NOT_RUN and top["K1"]["number"] == ""


def test_report_opens_with_what_we_found_and_its_verdicts_are_the_tables(tmp_path):
    df = pd.read_parquet(REPO / "reports/small/metrics.parquet")
    summary = build_report(df, "small", tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## What we found") < md.index("## How to read") < md.index("## Claims")
    found = md.split("## What we found", 1)[1].split("\n## ", 1)[0]
    assert f"**Open ({len(CLAIMS)} of {len(CLAIMS)})**" in found
    assert [h["verdict"] for h in summary["headline"]] == [summary["verdicts"][c[0]] for c in CLAIMS]
    assert "<ul><li>" in (tmp_path / "report.html").read_text()


def test_docs_claims_lists_every_claim_of_the_table():
    text = (REPO / "docs/claims.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "|" in line[2:]]
    assert [r for r in rows if r not in ("id",)] == [c[0] for c in CLAIMS]
