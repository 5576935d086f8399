"""workflow.run_inline: the orchestrator-free runner, serial and with several jobs at once."""
from __future__ import annotations

import sys

from diffrepro.pipeline.grid import STAGES, plan
from diffrepro.pipeline.params import load_params
from pipeline_helpers import edit_params, make_project, run
from workflow.run_inline import producers

STAGE_SET = "prepare,targetvar,toystudy"


def _jobs(project, profile="smoke"):
    pl = plan(load_params(project / "params.yaml"), profile, "params.yaml")
    return [j for s in STAGES for j in pl[s].values()]


def test_each_job_waits_for_exactly_the_jobs_that_write_its_inputs(tmp_path):
    jobs = _jobs(make_project(tmp_path / "p"))
    needs = producers(jobs)
    by_key = {(j.stage, j.key): i for i, j in enumerate(jobs)}
    for i, job in enumerate(jobs):
        stages = {jobs[k].stage for k in needs[i]}
        if job.stage == "train":
            assert stages == {"prepare"} and len(needs[i]) == 1
            data = jobs[next(iter(needs[i]))]
            assert data.outs[0] in job.deps
        if job.stage == "fid":
            assert stages == {"sample", "fidref"}
            assert by_key[("sample", job.key)] in needs[i]
        if job.stage == "memtrace":
            assert stages == {"train", "prepare", "fidref"}
        if job.stage in ("prepare", "fidref", "toystudy"):
            assert not needs[i]
    agg = by_key[("aggregate", "smoke")]
    # the aggregate reads every run's and every evaluation's outputs
    assert {jobs[k].stage for k in needs[agg]} >= {"train", "sample", "fid", "memorize", "gap", "memtrace"}
    assert by_key[("aggregate", "smoke")] in needs[by_key[("report", "smoke")]]


def test_parallel_jobs_stop_after_a_failure_and_resume_once_fixed(tmp_path):
    project = make_project(tmp_path / "p")
    empty = tmp_path / "empty"
    empty.mkdir()
    edit_params(project / "params.yaml", lambda p: p["datasets"]["fmnist"].update(source=str(empty)))
    cmd = [sys.executable, "-m", "workflow.run_inline", "--profile", "smoke", "--stages", STAGE_SET, "--jobs", "2"]
    res = run(cmd, project, check=False)
    jobs = {j.stage + " " + j.key.split("-")[0]: j for j in _jobs(project)}
    assert {"prepare toy", "prepare fmnist", "targetvar fmnist", "toystudy smoke"} <= set(jobs)
    assert res.returncode != 0
    assert "1 job(s) failed: prepare fmnist" in res.stderr
    assert str(empty) in res.stderr                       # the failed job's log is shown
    assert (project / jobs["prepare toy"].outs[0]).exists()
    assert not (project / jobs["prepare fmnist"].outs[0]).exists()
    # the job that needs the failed one's output never starts, and no job starts once the failure is seen
    # (toystudy, which needs nothing, may or may not have started before that: the order of finishing varies)
    assert not any((project / o).exists() for o in jobs["targetvar fmnist"].outs)
    assert "] start " not in res.stderr.split("FAILED", 1)[1]
    toystudy_ran = all((project / o).exists() for o in jobs["toystudy smoke"].outs)

    edit_params(project / "params.yaml", lambda p: p["datasets"]["fmnist"].update(source=None))
    jobs = {j.stage + " " + j.key.split("-")[0]: j for j in _jobs(project)}
    toy_mtime = (project / jobs["prepare toy"].outs[0] / "train.npy").stat().st_mtime
    res = run(cmd, project)
    done_before = 2 if toystudy_ran else 1
    assert f"ran {4 - done_before} jobs, {done_before} up to date, 0 failed" in res.stderr, res.stderr
    assert (project / jobs["prepare toy"].outs[0] / "train.npy").stat().st_mtime == toy_mtime
    # targetvar started after its dataset was written
    data = project / jobs["prepare fmnist"].outs[0] / "train.npy"
    assert (project / jobs["targetvar fmnist"].outs[0]).stat().st_mtime >= data.stat().st_mtime
    assert (project / jobs["targetvar fmnist"].log).read_text()     # each job's output goes to its log

    res = run(cmd, project)
    assert "ran 0 jobs, 4 up to date, 0 failed" in res.stderr
