"""The committed GPU report regenerates from its committed per-run results, without training."""
import shutil
import sys

from pipeline_helpers import REPO, make_project, run


def _claims(text: str) -> str:
    return text.split("## Claims", 1)[1].split("\n## ", 1)[0]


def test_small_report_regenerates_from_committed_results(tmp_path):
    committed = REPO / "reports" / "small"
    project = make_project(tmp_path / "p")
    shutil.copytree(committed / "results", project / "results")
    run([sys.executable, "-m", "stages.aggregate", "--profile", "small", "--out", "reports/small/metrics.parquet",
         "--allow-missing"], project)
    run([sys.executable, "-m", "stages.report", "--profile", "small", "--metrics", "reports/small/metrics.parquet",
         "--out", "reports/small"], project)
    regenerated = (project / "reports/small/report.md").read_text()
    assert _claims(regenerated) == _claims((committed / "report.md").read_text())
    assert "not run" not in _claims(regenerated)       # every claim row carries measured numbers
