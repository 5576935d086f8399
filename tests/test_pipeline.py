"""End to end on CPU with real Snakemake and real DVC: the smoke profile runs as the README says, is cached,
and reruns exactly what a parameter or code change touches; a fresh clone runs `dvc repro` and
`dvc exp run -S`; a killed Snakemake recovers; a failed job shows its log."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline_helpers import (BIN, dvc, dvc_changed, dvc_jobs, edit_params, env, git, git_init, make_project, run,
                              snakemake, snakemake_job_counts, snakemake_jobs, stage_counts)

pytestmark = pytest.mark.integration

LOCAL = ("--profile", "workflow/profiles/local")
DOWNSTREAM_OF_TRAIN = {"sample": 7, "fid": 2, "memorize": 7, "gap": 2, "memtrace": 2, "trajectory": 1,
                       "aggregate": 1, "report": 1}
# Changing methods.edm reruns the EDM runs on both smoke datasets (toy: no FID) plus aggregate/report.
EDM_CHANGE = {"train": 2, "sample": 2, "fid": 1, "memorize": 2, "gap": 2, "memtrace": 2, "trajectory": 1,
              "aggregate": 1, "report": 1}


def _set_edm_p_mean(p):
    p["methods"]["edm"]["sigma_dist"]["P_mean"] = -1.1


def _check_outputs(project, profile="smoke"):
    df = pd.read_parquet(project / f"reports/{profile}/metrics.parquet")
    fid = df[df["metric"] == "fid"]
    assert set(fid["method"]) == {"edm", "vp"}
    assert fid["value"].between(1, 1000).all(), fid["value"]
    assert (fid["num_samples"] == 64).all() and (fid["fid_ref_count"] == 100).all()
    mem = df[df["metric"] == "mem_fraction_memorized"]
    assert len(mem) == 7 and mem["value"].between(0, 1).all()
    # the training loss is comparable over time only under a fixed sigma distribution (not InfoNoise)
    loss = df[(df["metric"] == "train_loss") & (df["sigma_dist"] != "infonoise")]
    first, last = loss.sort_values("step").groupby("run")["value"].agg(["first", "last"]).T.values
    assert (last < first).all(), "training loss should fall in every run"
    of_runs = df[df["run"].notna()]          # every row of a run or of its checkpoints carries its provenance
    for col in ("git_commit", "params_hash", "dataset_sha256", "seed", "device", "wall_time_s"):
        assert col in df.columns and of_runs[col].notna().all(), col
    assert df.loc[df["run"].isna(), "analysis"].notna().all(), "the other rows name the analysis they come from"
    gap = df[df["metric"] == "gap"]
    assert sorted(gap["step"].unique()) == [100, 200] and gap["sigma"].nunique() == 8
    assert sorted(df.loc[df["metric"] == "mem_fraction_ckpt", "step"]) == [100, 200]
    fid_ckpt = df[df["metric"] == "fid_ckpt"]       # FID over training, from the same checkpoint samples
    assert sorted(fid_ckpt["step"]) == [100, 200] and fid_ckpt["value"].between(1, 1000).all()
    assert (fid_ckpt["num_samples"] == 32).all() and (fid_ckpt["fid_ref_count"] == 100).all()
    assert (df["metric"] == "traj_r_traj").sum() == 18
    assert {"width", "n_train", "step"} <= set(df.loc[df["metric"] == "toy_fraction", "factor"])
    report = (project / f"reports/{profile}/report.md").read_text()
    assert "## Claims" in report and "| E2 |" in report and "figures/loss_curves.png" in report
    assert "N=300.0" not in report and "N=300" in report
    summary = json.loads((project / f"reports/{profile}/summary.json").read_text())
    assert summary["runs"] == 7 and len(summary["fid"]) == 2
    assert all(summary["verdicts"][c] != "not run" for c in ("T1", "K1", "K2", "K3"))
    assert (project / f"reports/{profile}/report.html").read_text().count("<img") >= 3
    curves = project / f"reports/{profile}/curves"
    assert len(list((curves / "loss").glob("*.csv"))) == 7 and len(list((curves / "fid").glob("*.csv"))) == 1
    assert pd.read_csv(curves / "fid" / "fmnist-n300_edm_tiny-cpu_s0.csv")["step"].tolist() == [100, 200]


def _append(path: Path, text: str) -> str:
    original = path.read_text()
    path.write_text(original + text)
    return original


# ------------------------------------------------------------------------------------------ Snakemake
@pytest.fixture(scope="module")
def sm_run(tmp_path_factory):
    """The README's command on a copy of the project: `make run` is this after the install."""
    project = make_project(tmp_path_factory.mktemp("snakemake"))
    res = snakemake(project, *LOCAL)
    return project, res.stdout + res.stderr


@pytest.fixture
def sm_project(sm_run):
    return sm_run[0]


def test_snakemake_runs_smoke_profile_end_to_end(sm_run):
    project, console = sm_run
    _check_outputs(project)
    assert list((project / "results/benchmarks/train").glob("*.tsv")), "benchmark files per job"
    # a line per job naming it, and a last line naming the report
    assert re.search(r"^Job \d+: train fmnist-n300_edm_tiny-cpu_s0$", console, re.M)
    assert "\nreport: reports/smoke/report.md\n" in console
    log = (project / "results/logs/train/fmnist-n300_edm_tiny-cpu_s0.log").read_text()
    assert re.search(r"step 200/200 +loss [\d.]+ +[\d.]+ img/s", log), log
    assert not (project / "results/runs/fmnist-n300_edm_tiny-cpu_s0/ckpt").exists(), "a finished run drops its resume state"
    snaps = sorted(p.name for p in (project / "results/runs/fmnist-n300_edm_tiny-cpu_s0/snapshots").glob("step-*"))
    assert snaps == ["step-00000100.pt", "step-00000200.pt"]


def test_snakemake_second_run_does_nothing(sm_project):
    assert snakemake_job_counts(sm_project) == {}


@pytest.mark.parametrize("edit,expected", [
    (lambda p: p["evaluation"]["memorization"].update(threshold=0.3), {"memorize": 7, "memtrace": 2}),
    (lambda p: p["profiles"]["smoke"]["analysis"].update(sigmas=9), {"gap": 2}),
    (lambda p: p["profiles"]["smoke"]["analysis"].update(memtrace_samples=16), {"memtrace": 2}),
    (lambda p: p["profiles"]["smoke"]["analysis"].update(trajectory_samples=16), {"trajectory": 1}),
    (lambda p: p["evaluation"]["fid"].update(batch_size=16), {"fidref": 1, "fid": 2, "memtrace": 2}),
])
def test_snakemake_reruns_exactly_the_jobs_of_an_analysis_parameter(sm_project, edit, expected):
    original = (sm_project / "params.yaml").read_text()
    edit_params(sm_project / "params.yaml", edit)
    try:
        assert snakemake_job_counts(sm_project) == {**expected, "aggregate": 1, "report": 1}
    finally:
        (sm_project / "params.yaml").write_text(original)
    assert snakemake_job_counts(sm_project) == {}, "the restored spec files match what the outputs were made from"


def test_config_overrides_reach_the_specs(sm_project):
    counts = snakemake_job_counts(sm_project, "--config", "evaluation={memorization: {threshold: 0.25}}")
    assert counts == {"memorize": 7, "memtrace": 2, "aggregate": 1, "report": 1}
    spec = json.loads((sm_project / "results/specs/memtrace/fmnist-n300_edm_tiny-cpu_s0__step100.json").read_text())
    assert spec["threshold"] == 0.25
    assert snakemake_job_counts(sm_project) == {}


@pytest.mark.parametrize("module,expected", [
    ("diffrepro/methods/sparse.py", {"train": 7, "targetvar": 1, **DOWNSTREAM_OF_TRAIN}),
    ("diffrepro/metrics/memorization.py", {"memorize": 7, "memtrace": 2, "trajectory": 1, "toystudy": 1, "aggregate": 1,
                                           "report": 1}),
    ("diffrepro/report/claims.py", {"report": 1}),
    ("README.md", {}),
    ("tests/test_example.py", {}),
])
def test_snakemake_reruns_exactly_the_dependents_of_a_code_change(sm_project, module, expected):
    path = sm_project / module
    original = _append(path, "\n# an edit\n")
    try:
        assert snakemake_job_counts(sm_project) == expected
    finally:
        path.write_text(original)
    assert snakemake_job_counts(sm_project) == {}, "reverted: same checksum, nothing reruns (only the mtime moved)"


def test_a_byte_identical_copy_of_the_dataset_reruns_nothing(sm_project, tmp_path):
    from diffrepro.data.fashion_mnist import DEBIAN_DIR

    if not DEBIAN_DIR.is_dir():
        pytest.skip("needs Debian's dataset-fashion-mnist")
    shutil.copytree(DEBIAN_DIR, tmp_path / "copy")
    original = (sm_project / "params.yaml").read_text()
    edit_params(sm_project / "params.yaml", lambda p: p["datasets"]["fmnist"].update(source=str(tmp_path / "copy")))
    try:
        assert snakemake_job_counts(sm_project) == {}
    finally:
        (sm_project / "params.yaml").write_text(original)


def test_snakemake_reruns_exactly_what_a_method_change_touches(sm_project):
    original = (sm_project / "params.yaml").read_text()
    edit_params(sm_project / "params.yaml", _set_edm_p_mean)
    try:
        assert snakemake_job_counts(sm_project) == EDM_CHANGE      # the VP run and the toy methods stay
    finally:
        (sm_project / "params.yaml").write_text(original)
    assert snakemake_job_counts(sm_project) == {}


def test_published_results_regenerate_the_report_without_the_runs(sm_project):
    """workflow.publish copies what the aggregate and report stages read (no checkpoints or samples) into a
    folder to commit; the metrics table and claims regenerate from that folder alone."""
    res = run([sys.executable, "-m", "workflow.publish", "--profile", "smoke", "--to", "published"], sm_project)
    copied = int(res.stdout.split()[0])
    assert copied > 30 and "0 not made yet" in res.stdout
    pub = sm_project / "published"
    assert not list(pub.rglob("*.pt")) and not list(pub.rglob("*.npy")), "no checkpoints or samples"
    spec = (pub / "specs/aggregate.json").read_text()
    assert '"results/' not in spec.replace('"published/results/', '')
    try:
        shutil.move(sm_project / "results", sm_project / "results.away")     # the runs are gone
        run([sys.executable, "-m", "stages.aggregate", "--spec", "published/specs/aggregate.json",
             "--out", "published/metrics.parquet"], sm_project)
        run([sys.executable, "-m", "stages.report", "--spec", "published/specs/report.json",
             "--metrics", "published/metrics.parquet", "--out", "published"], sm_project)
    finally:
        shutil.move(sm_project / "results.away", sm_project / "results")
    cols = ["run", "eval", "metric", "step", "sigma", "value"]
    key = lambda d: d[cols].sort_values(cols[:-1], na_position="first").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(pd.read_parquet(pub / "metrics.parquet")),
                                  key(pd.read_parquet(sm_project / "reports/smoke/metrics.parquet")), check_dtype=False)
    claims = lambda t: t.split("## Claims", 1)[1].split("\n## ", 1)[0]  # noqa: E731
    assert claims((pub / "report.md").read_text()) == claims((sm_project / "reports/smoke/report.md").read_text())
    assert len(list((pub / "figures").glob("samples-*.png"))) == 7


def test_bad_params_fail_before_any_job_and_name_the_key(tmp_path):
    project = make_project(tmp_path / "p")
    edit_params(project / "params.yaml", lambda p: p["methods"]["sparse-50"]["mask"].update(ratoi=0.5))
    res = snakemake(project, "--dry-run", check=False)
    assert res.returncode != 0
    assert "methods.sparse-50.mask.ratoi: unknown key" in res.stdout + res.stderr
    assert not (project / "results").exists()


def test_a_failed_job_shows_the_end_of_its_log(tmp_path):
    project = make_project(tmp_path / "p")
    empty = tmp_path / "empty"
    empty.mkdir()
    edit_params(project / "params.yaml", lambda p: p["datasets"]["fmnist"].update(source=str(empty)))
    res = snakemake(project, *LOCAL, "results/data/fmnist-n300", check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "prepare fmnist-n300 failed; last lines of results/logs/prepare/fmnist-n300.log" in out
    assert f"error: Fashion-MNIST file" in out and str(empty) in out and "Traceback" not in out


def test_make_run_recovers_after_snakemake_is_killed(tmp_path):
    """Snakemake killed mid-run leaves its lock; the README's command unlocks it (no Snakemake runs here)
    and goes on, rerunning the incomplete job."""
    project = make_project(tmp_path / "p")
    target = "results/analysis/toystudy/smoke.parquet"
    proc = subprocess.Popen([BIN / "snakemake", "--cores", "1", target], cwd=project, env=env(project),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = project / "results/logs/toystudy/smoke.log"
    deadline = time.time() + 300
    while not log.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)           # Snakemake and the job it started
    proc.wait()
    assert list((project / ".snakemake/locks").iterdir()), "a killed Snakemake leaves its lock"
    res = snakemake(project, target, check=False)
    assert res.returncode != 0 and "LockException" in res.stdout + res.stderr
    res = run([sys.executable, "-m", "workflow.unlock"], project)
    assert "removing the lock" in res.stderr
    res = snakemake(project, *LOCAL, target)
    assert (project / target).exists()


def test_unlock_leaves_the_lock_of_a_running_snakemake(tmp_path):
    from workflow.unlock import snakemake_running_here

    project = make_project(tmp_path / "p")
    proc = subprocess.Popen([BIN / "snakemake", "--cores", "1", "results/analysis/toystudy/smoke.parquet"],
                            cwd=project, env=env(project), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (project / ".snakemake/locks").is_dir() and time.time() < deadline:
            time.sleep(0.2)
        assert snakemake_running_here(project) is True
        res = run([sys.executable, "-m", "workflow.unlock"], project, check=False)
        assert res.returncode == 1 and "another Snakemake is running" in res.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert snakemake_running_here(project) is False


@pytest.mark.parametrize("profile", ["smoke", "small"])
def test_snakemake_and_dvc_plan_the_same_jobs(tmp_path, profile):
    project = make_project(tmp_path / "p")
    run([sys.executable, "-m", "workflow.make_dvc", "--profile", profile], project)
    git_init(project)
    sm = snakemake_jobs(project, "--config", f"profile={profile}")
    dv = {(s, k) for s, k in dvc_jobs(project) if s != "plan"}
    dv = {(s, k or (profile if s in ("aggregate", "report", "toystudy") else k)) for s, k in dv}
    assert sm == dv
    assert len(sm) > 10


# ------------------------------------------------------------------------------------------ DVC
@pytest.fixture(scope="module")
def dvc_clone(tmp_path_factory):
    """A fresh clone of the project (git + the committed .dvc/), reproduced with `dvc repro` from nothing."""
    origin = make_project(tmp_path_factory.mktemp("origin"))
    git_init(origin)
    clone = tmp_path_factory.mktemp("clone") / "project"
    run(["git", "clone", "-q", origin, clone], origin.parent)
    res = dvc(clone, "repro", timeout=3000)
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "smoke results")
    return clone, res.stdout + res.stderr


def test_dvc_repro_in_a_fresh_clone(dvc_clone):
    clone, out = dvc_clone
    _check_outputs(clone)
    assert "Running stage 'train@fmnist-n300_edm_tiny-cpu_s0'" in out
    assert dvc_changed(clone) == []
    metrics = json.loads(dvc(clone, "metrics", "show", "--json").stdout)
    assert "claims_filled" in json.dumps(metrics)
    plots = json.loads(dvc(clone, "plots", "show", "--json").stdout)
    assert any("curves/loss/fmnist-n300_edm_tiny-cpu_s0.csv" in k for k in plots.get("data", plots))


@pytest.mark.parametrize("module,expected", [
    ("diffrepro/methods/sparse.py", {"train": 7, "targetvar": 1}),       # the stages whose own deps changed
    ("diffrepro/metrics/fid.py", {"fidref": 1, "fid": 2, "memtrace": 2}),
    ("README.md", {}),
    ("tests/test_example.py", {}),
])
def test_dvc_sees_exactly_the_stages_whose_code_changed(dvc_clone, module, expected):
    clone, _ = dvc_clone
    path = clone / module
    original = _append(path, "\n# an edit\n")
    try:
        assert stage_counts(dvc_changed(clone)) == expected
    finally:
        path.write_text(original)
    assert dvc_changed(clone) == []


def test_dvc_exp_run_set_param_reruns_exactly_its_jobs(dvc_clone):
    clone, _ = dvc_clone
    base = json.loads((clone / "reports/smoke/summary.json").read_text())
    res = dvc(clone, "exp", "run", "-n", "thr", "-S", "evaluation.memorization.threshold=0.2", timeout=1200)
    ran = re.findall(r"Running stage '([^']+)'", res.stdout + res.stderr)
    assert stage_counts(ran) == {"plan": 1, "memorize": 7, "memtrace": 2, "aggregate": 1, "report": 1}, ran
    shown = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    exp = next(e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or []) if e["name"] == "thr")
    assert exp["params"]["params.yaml"]["data"]["evaluation"]["memorization"]["threshold"] == 0.2
    assert exp["metrics"]["reports/smoke/summary.json"]["data"]["fid"] == base["fid"], "FID comes from the cache"
    diff = json.loads(dvc(clone, "metrics", "diff", "HEAD", "--json").stdout)
    assert "reports/smoke/summary.json" in json.dumps(diff)
    plots = dvc(clone, "plots", "diff", "HEAD", "--json")
    assert "curves/fid" in plots.stdout
    dvc(clone, "exp", "apply", "thr", check=False)
    git(clone, "checkout", "--", ".", check=False)


def test_dvc_exp_run_that_changes_the_job_set_says_to_regenerate(dvc_clone):
    clone, _ = dvc_clone
    res = dvc(clone, "exp", "run", "-S", "profile=toy", check=False, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "dvc.yaml does not describe the jobs of profile 'toy'" in out and "python -m workflow.make_dvc" in out
    git(clone, "checkout", "--", "params.yaml")
