"""End to end on CPU with real Snakemake and real DVC: the smoke profile runs, is cached, and reruns
exactly what a parameter change touches; the two orchestrators plan the same jobs."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from pipeline_helpers import (BIN, dvc, dvc_init, dvc_jobs, dvc_stages_to_run, edit_params, env, make_project,
                              regenerate_dvc, run, snakemake, snakemake_job_counts, snakemake_jobs)

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
    assert (fid["num_samples"] == 100).all() and (fid["fid_ref_count"] == 200).all()
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
    # generalization / memorization analyses (issue: per-checkpoint gap and memorization, trajectories, 2D toys)
    gap = df[df["metric"] == "gap"]
    assert sorted(gap["step"].unique()) == [100, 200] and gap["sigma"].nunique() == 8
    assert sorted(df.loc[df["metric"] == "mem_fraction_ckpt", "step"]) == [100, 200]
    fid_ckpt = df[df["metric"] == "fid_ckpt"]       # FID over training, from the same checkpoint samples
    assert sorted(fid_ckpt["step"]) == [100, 200] and fid_ckpt["value"].between(1, 1000).all()
    assert (fid_ckpt["num_samples"] == 64).all() and (fid_ckpt["fid_ref_count"] == 200).all()
    assert (df["metric"] == "traj_r_traj").sum() == 18
    assert {"width", "n_train", "step"} <= set(df.loc[df["metric"] == "toy_fraction", "factor"])
    report = (project / f"reports/{profile}/report.md").read_text()
    assert "## Claims" in report and "| E2 |" in report and "figures/loss_curves.png" in report
    summary = json.loads((project / f"reports/{profile}/summary.json").read_text())
    assert summary["runs"] == 7 and len(summary["fid"]) == 2
    assert all(summary["verdicts"][c] != "not run" for c in ("T1", "K1", "K2", "K3"))
    assert (project / f"reports/{profile}/report.html").read_text().count("<img") >= 3


# ------------------------------------------------------------------------------------------ Snakemake
@pytest.fixture(scope="module")
def sm_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("snakemake"))
    snakemake(project)
    # a pristine copy of the finished project, before the tests below edit params.yaml, for DVC
    shutil.copytree(project, tmp_path_factory.getbasetemp() / "snakemake-finished",
                    ignore=shutil.ignore_patterns(".snakemake"))
    return project


def test_snakemake_runs_smoke_profile_end_to_end(sm_project):
    _check_outputs(sm_project)
    assert list((sm_project / "results/benchmarks/train").glob("*.tsv")), "benchmark files per job"
    assert list((sm_project / "results/logs/fid").glob("*.log"))


def test_snakemake_second_run_does_nothing(sm_project):
    assert snakemake_job_counts(sm_project) == {}


def test_snakemake_analysis_grid_point_reruns_only_the_gap_jobs(sm_project):
    original = (sm_project / "params.yaml").read_text()
    edit_params(sm_project / "params.yaml", lambda p: p["profiles"]["smoke"]["analysis"].update(sigmas=9))
    try:
        assert snakemake_job_counts(sm_project) == {"gap": 2, "aggregate": 1, "report": 1}
    finally:
        (sm_project / "params.yaml").write_text(original)
    assert snakemake_job_counts(sm_project) == {}


def test_snakemake_reruns_exactly_what_a_method_change_touches(sm_project):
    vp_models = list(sm_project.glob("results/runs/*_vp_*/model.pt"))
    mtimes = {p: p.stat().st_mtime_ns for p in vp_models}
    edit_params(sm_project / "params.yaml", _set_edm_p_mean)
    assert snakemake_job_counts(sm_project) == EDM_CHANGE
    res = snakemake(sm_project)
    assert (res.stdout + res.stderr).count("Finished jobid") == sum(EDM_CHANGE.values()) + 1  # + "all"
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items()), "the VP run must not be retrained"
    assert snakemake_job_counts(sm_project) == {}


def test_snakemake_dataset_size_change_reruns_only_that_subset(sm_project):
    def shrink(p):
        for exp in p["profiles"]["smoke"]["experiments"][1:]:
            exp["sizes"] = [256]
    edit_params(sm_project / "params.yaml", shrink)
    # new subset: its preparation, both methods' runs on it; the toy run and the FID reference stay cached
    assert snakemake_job_counts(sm_project) == {"prepare": 1, "targetvar": 1, "train": 2, "sample": 2, "fid": 2, "memorize": 2,
                                                "gap": 2, "memtrace": 2, "trajectory": 1,
                                                "aggregate": 1, "report": 1}


def test_bad_params_fail_before_any_job_and_name_the_key(tmp_path):
    project = make_project(tmp_path / "p")
    edit_params(project / "params.yaml", lambda p: p["methods"]["edm"].update(precond="edn"))
    res = snakemake(project, "--dry-run", check=False)
    assert res.returncode != 0
    assert "precond" in res.stdout + res.stderr and "edn" in res.stdout + res.stderr
    assert not (project / "results").exists()


# ------------------------------------------------------------------------------------------ DVC
@pytest.fixture(scope="module")
def dvc_project(sm_project, tmp_path_factory):
    """The smoke project as Snakemake finished it, adopted by DVC: `dvc commit` records Snakemake's
    outputs as the results of dvc.yaml's stages (same commands, same paths), so the DVC tests below
    start from a finished pipeline without running it a second time. `test_dvc_repro_from_scratch`
    (slow) runs `dvc repro` on an empty project; the queue test below runs real DVC stages."""
    project = tmp_path_factory.getbasetemp() / "snakemake-finished"
    dvc_init(project)
    dvc(project, "commit", "--force", "--quiet")
    return project


def test_dvc_adopts_the_outputs_of_the_same_dag(dvc_project):
    assert dvc_stages_to_run(dvc_project) == [], "dvc.yaml and the Snakefile describe the same jobs and files"
    metrics = dvc(dvc_project, "metrics", "show", "--json").stdout
    assert "claims_filled" in metrics


@pytest.mark.slow
def test_dvc_repro_from_scratch(tmp_path):
    project = make_project(tmp_path / "dvc")
    dvc_init(project)
    dvc(project, "repro")
    _check_outputs(project)
    assert dvc_stages_to_run(project) == []


def _stage_counts(names):
    counts = {}
    for name in names:
        stage = name.split("@")[0].split("-")[0]
        counts[stage] = counts.get(stage, 0) + 1
    return counts


def test_dvc_reruns_exactly_what_a_method_change_touches(dvc_project):
    original = {f: (dvc_project / f).read_text() for f in ("params.yaml", "dvc.yaml")}
    try:
        edit_params(dvc_project / "params.yaml", _set_edm_p_mean)
        regenerate_dvc(dvc_project)
        todo = dvc_stages_to_run(dvc_project)
        assert _stage_counts(todo) == EDM_CHANGE, todo
    finally:
        for f, text in original.items():
            (dvc_project / f).write_text(text)
    assert dvc_stages_to_run(dvc_project) == []


def test_dvc_experiment_queue_runs_a_grid_variation(dvc_project):
    """`dvc exp run --queue` through workflow.dvc_queue: the queued experiment reruns only the EDM jobs
    (everything else comes from DVC's run cache) and reports its own metrics."""
    (dvc_project / ".gitignore").write_text("results/\n.snakemake/\n")
    run(["git", "add", "-A"], dvc_project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "smoke results"], dvc_project)
    run([sys.executable, "-m", "workflow.dvc_queue", "--name", "pmean", "--dvc", BIN / "dvc",
         "-S", "methods.edm.sigma_dist.P_mean=-1.1"], dvc_project)
    assert dvc_stages_to_run(dvc_project) == [], "queueing leaves the workspace as it was"
    dvc(dvc_project, "queue", "start", "--jobs", "1")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = dvc(dvc_project, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    assert "Success" in status, status + dvc(dvc_project, "queue", "logs", "pmean", check=False).stdout
    logs = dvc(dvc_project, "queue", "logs", "pmean").stdout
    ran = re.findall(r"Running stage '([^']+)'", logs)
    assert _stage_counts(ran) == EDM_CHANGE, ran
    shown = json.loads(dvc(dvc_project, "exp", "show", "--json").stdout)
    exp = next(e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or []) if e["name"] == "pmean")
    assert exp["params"]["params.yaml"]["data"]["methods"]["edm"]["sigma_dist"]["P_mean"] == -1.1
    fid = exp["metrics"]["reports/smoke/summary.json"]["data"]["fid"]
    base = json.loads((dvc_project / "reports/smoke/summary.json").read_text())["fid"]
    edm = [k for k in fid if "_edm_" in k]
    assert len(fid) == 2 and len(edm) == 1 and edm[0] not in base, "the EDM run is a new job with its own key"
    vp = [k for k in fid if "_vp_" in k]
    assert fid[vp[0]] == base[vp[0]], "the untouched VP run's FID comes from the cache"
    dvc(dvc_project, "queue", "stop", check=False)


# ------------------------------------------------------------------------------------------ same DAG
@pytest.mark.parametrize("profile", ["smoke", "small"])
def test_snakemake_and_dvc_plan_the_same_jobs(tmp_path, profile):
    project = make_project(tmp_path / "p")
    run([sys.executable, "-m", "workflow.make_dvc", "--profile", profile], project)
    dvc_init(project)
    sm = snakemake_jobs(project, "--config", f"profile={profile}")
    dv = dvc_jobs(project)
    assert sm == dv
    assert len(sm) > 10


def test_committed_dvc_yaml_is_current():
    from pipeline_helpers import REPO
    run([sys.executable, "-m", "workflow.make_dvc", "--check"], REPO)


# ------------------------------------------------------------------------------------------ failures
@pytest.fixture(scope="module")
def toy_project(tmp_path_factory):
    """A project with the toy dataset prepared; the run keys of the smoke profile."""
    from diffrepro.pipeline.grid import plan
    from diffrepro.pipeline.params import load_params

    project = make_project(tmp_path_factory.mktemp("toy"))
    pl = plan(load_params(project / "params.yaml"), "smoke", "params.yaml")
    job = next(j for j in pl["train"].values() if j.key.startswith("toy"))
    prep = pl["prepare"][job.deps[0].split("/")[-1]]
    run([sys.executable, "-m", "stages.prepare", *prep.args], project)
    return project, job


def _train(project, job, out, **kw):
    args = [sys.executable, "-m", "stages.train", "--params", "params.yaml", "--job", job.key,
            "--data", job.deps[0], "--out", out, "--no-progress"]
    return subprocess.Popen(args, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(toy_project):
    project, job = toy_project
    full = _train(project, job, "results/full")
    assert full.wait(timeout=600) == 0, full.stderr.read()

    victim = _train(project, job, "results/killed")
    # kill once the first checkpoint is complete: its resume state is written after its EMA snapshot
    resume = project / "results/killed/ckpt/resume.pt"
    deadline = time.time() + 300
    while not resume.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run must be killed mid-training"
    assert not (project / "results/killed/model.pt").exists()
    # a kill between an atomic write and its rename can leave a hidden temporary, never a partial file under
    # a final name (the resumed run below loads the checkpoints it finds); the restart clears temporaries
    from diffrepro.io import _TEMPORARY
    assert all(_TEMPORARY.match(p.name) for p in (project / "results/killed").rglob(".*") if p.is_file())
    (project / "results/killed/ckpt/.resume.pt.k1lled00.pt").write_bytes(b"partial")   # as if it had landed there

    resumed = _train(project, job, "results/killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from checkpoint at step" in err
    assert not [p for p in (project / "results/killed").rglob(".*") if p.is_file()], "no partial files left"
    a = torch.load(project / "results/full/model.pt", weights_only=False)["ema"]
    b = torch.load(project / "results/killed/model.pt", weights_only=False)["ema"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = pd.read_parquet(project / "results/full/train_metrics.parquet")
    mb = pd.read_parquet(project / "results/killed/train_metrics.parquet")
    pd.testing.assert_series_equal(ma[ma.metric == "train_loss"]["value"], mb[mb.metric == "train_loss"]["value"])


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(toy_project):
    project, job = toy_project
    original = (project / "params.yaml").read_text()
    edit_params(project / "params.yaml", lambda p: p["training"]["toy-cpu"].update(lr=1e12))
    try:
        from diffrepro.pipeline.grid import plan
        from diffrepro.pipeline.params import load_params
        pl = plan(load_params(project / "params.yaml"), "smoke", "params.yaml")
        bad = next(j for j in pl["train"].values() if j.key.startswith("toy"))
        proc = _train(project, bad, "results/diverged")
        out, err = proc.communicate(timeout=600)
    finally:
        (project / "params.yaml").write_text(original)
    assert proc.returncode == 1
    assert "error: training loss became" in err and "Lower the learning rate" in err
    assert not (project / "results/diverged/model.pt").exists()


def test_corrupt_dataset_fails_with_instructions(toy_project, tmp_path):
    project, job = toy_project
    data = project / job.deps[0]
    arr = data / "train.npy"
    original = arr.read_bytes()
    try:
        arr.write_bytes(original[:-8] + b"\x00" * 8)
        proc = _train(project, job, "results/corrupt")
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1
        assert "train.npy" in err and "prepare" in err and "Traceback" not in err
    finally:
        arr.write_bytes(original)
    assert not (project / "results/corrupt/model.pt").exists()


def test_missing_fashion_mnist_source_says_what_to_do(tmp_path):
    project = make_project(tmp_path / "p")
    empty = tmp_path / "empty"
    empty.mkdir()
    edit_params(project / "params.yaml", lambda p: p["datasets"]["fmnist"].update(source=str(empty)))
    from diffrepro.pipeline.grid import plan
    from diffrepro.pipeline.params import load_params
    pl = plan(load_params(project / "params.yaml"), "smoke", "params.yaml")
    prep = next(j for j in pl["prepare"].values() if j.key.startswith("fmnist"))
    res = run([sys.executable, "-m", "stages.prepare", *prep.args], project, check=False)
    assert res.returncode == 1
    assert str(empty) in res.stderr and "source" in res.stderr and "Traceback" not in res.stderr
    assert not (project / prep.outs[0]).exists()
