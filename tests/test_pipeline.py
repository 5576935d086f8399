"""End to end on CPU with real Snakemake and real DVC: the smoke profile runs, is cached, and reruns
exactly what a parameter change touches; the two orchestrators plan the same jobs."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from pipeline_helpers import (dvc, dvc_init, dvc_jobs, dvc_stages_to_run, edit_params, env, make_project,
                              regenerate_dvc, run, snakemake, snakemake_job_counts, snakemake_jobs)

# Changing methods.edm reruns the EDM runs on both smoke datasets (toy: no FID) plus aggregate/report.
EDM_CHANGE = {"train": 2, "sample": 2, "fid": 1, "memorize": 2, "aggregate": 1, "report": 1}


def _set_edm_p_mean(p):
    p["methods"]["edm"]["sigma_dist"]["P_mean"] = -1.1


def _check_outputs(project, profile="smoke"):
    df = pd.read_parquet(project / f"reports/{profile}/metrics.parquet")
    fid = df[df["metric"] == "fid"]
    assert set(fid["method"]) == {"edm", "vp"}
    assert fid["value"].between(1, 1000).all(), fid["value"]
    assert (fid["num_samples"] == 128).all() and (fid["fid_ref_count"] == 256).all()
    mem = df[df["metric"] == "mem_fraction_memorized"]
    assert len(mem) == 7 and mem["value"].between(0, 1).all()
    # the training loss is comparable over time only under a fixed sigma distribution (not InfoNoise)
    loss = df[(df["metric"] == "train_loss") & (df["sigma_dist"] != "infonoise")]
    first, last = loss.sort_values("step").groupby("run")["value"].agg(["first", "last"]).T.values
    assert (last < first).all(), "training loss should fall in every run"
    for col in ("git_commit", "params_hash", "dataset_sha256", "seed", "device", "wall_time_s"):
        assert col in df.columns and df[col].notna().all(), col
    report = (project / f"reports/{profile}/report.md").read_text()
    assert "## Claims" in report and "| E2 |" in report and "figures/loss_curves.png" in report
    summary = json.loads((project / f"reports/{profile}/summary.json").read_text())
    assert summary["runs"] == 7 and len(summary["fid"]) == 2
    assert summary["verdicts"]["T1"] != "not run"
    assert (project / f"reports/{profile}/report.html").read_text().count("<img") >= 3


# ------------------------------------------------------------------------------------------ Snakemake
@pytest.fixture(scope="module")
def sm_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("snakemake"))
    snakemake(project)
    return project


def test_snakemake_runs_smoke_profile_end_to_end(sm_project):
    _check_outputs(sm_project)
    assert list((sm_project / "results/benchmarks/train").glob("*.tsv")), "benchmark files per job"
    assert list((sm_project / "results/logs/fid").glob("*.log"))


def test_snakemake_second_run_does_nothing(sm_project):
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
        p["profiles"]["smoke"]["experiments"][1]["sizes"] = [256]
    edit_params(sm_project / "params.yaml", shrink)
    # new subset: its preparation, both methods' runs on it; the toy run and the FID reference stay cached
    assert snakemake_job_counts(sm_project) == {"prepare": 1, "targetvar": 1, "train": 2, "sample": 2, "fid": 2, "memorize": 2,
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
def dvc_project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("dvc"))
    dvc_init(project)
    dvc(project, "repro")
    return project


def test_dvc_runs_smoke_profile_end_to_end(dvc_project):
    _check_outputs(dvc_project)
    assert dvc_stages_to_run(dvc_project) == []
    metrics = dvc(dvc_project, "metrics", "show", "--json").stdout
    assert "claims_filled" in metrics


def test_dvc_reruns_exactly_what_a_method_change_touches(dvc_project):
    edit_params(dvc_project / "params.yaml", _set_edm_p_mean)
    regenerate_dvc(dvc_project)
    todo = dvc_stages_to_run(dvc_project)
    counts = {}
    for name in todo:
        stage = name.split("@")[0].split("-")[0]
        counts[stage] = counts.get(stage, 0) + 1
    assert counts == EDM_CHANGE, todo


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
    args = [sys.executable, "-m", "stages.train", "--params", "params.yaml", "--run", job.key,
            "--data", job.deps[0], "--out", out, "--no-progress"]
    return subprocess.Popen(args, cwd=project, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(toy_project):
    project, job = toy_project
    full = _train(project, job, "results/full")
    assert full.wait(timeout=600) == 0, full.stderr.read()

    victim = _train(project, job, "results/killed")
    snap = project / "results/killed/ckpt/snapshots/step-00000300.pt"
    deadline = time.time() + 300
    while not snap.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run must be killed mid-training"
    assert not (project / "results/killed/model.pt").exists()
    assert not [p for p in (project / "results/killed").rglob(".*") if p.is_file()], "no partial files"

    resumed = _train(project, job, "results/killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from checkpoint at step" in err
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
