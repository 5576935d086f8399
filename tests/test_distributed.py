"""Data-parallel training launched by torchrun (2 CPU processes, gloo) reproduces the single-process
run: same global batches, same random draws, averaged gradients, identical InfoNoise state and STF
reference batches on every rank."""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from pipeline_helpers import BIN, edit_params, env, make_project, run

pytestmark = pytest.mark.integration

# sparse mask + STF target + InfoNoise: every piece of per-rank state the distributed loop must keep equal
COMBO = {"precond": "edm", "mask": {"ratio": 0.5}, "target": {"kind": "stf", "ref_batch": 64},
         "sigma_dist": {"kind": "infonoise", "warmup_img": 512, "refresh_img": 256}}   # 8 steps, then every 4


def _plan(project):
    from diffrepro.pipeline.params import load_params
    from diffrepro.pipeline.plan import plan, write_specs

    pl = plan(load_params(project / "params.yaml"), "smoke")
    write_specs(pl, project)
    return pl


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("ddp"))

    def shrink(p):
        p["methods"]["combo"] = COMBO
        p["training"]["ddp-cpu"] = {**p["training"]["toy-cpu"], "steps": 40, "batch_size": 64,
                                    "checkpoint_every": 20, "log_every": 10}
        p["profiles"]["smoke"]["experiments"][0].update(methods=["combo"], training="ddp-cpu")
        p["profiles"]["smoke"].update(train_processes=2, device="cpu")
    edit_params(project / "params.yaml", shrink)
    pl = _plan(project)
    job = pl["train"]["toy-gmm-n500_combo_ddp-cpu_s0"]
    run([sys.executable, "-m", "stages.prepare", *pl["prepare"]["toy-gmm-n500"].argv], project)
    return project, job


def _single(job, out):
    args = list(job.argv)
    args[args.index("--out") + 1] = out
    return args


def test_plan_launches_training_with_torchrun(project):
    project, job = project
    assert job.processes == 2 and job.resources["threads"] == 2 * 1
    assert job.command.startswith("python -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train ")
    from workflow.make_dvc import render
    dvc_yaml = render(str(project / "params.yaml"), "smoke")
    assert "cmd: 'python -m torch.distributed.run --standalone --nproc_per_node 2 -m stages.train --spec" in dvc_yaml


def test_two_process_run_matches_single_process(project):
    project, job = project
    run([sys.executable, "-m", "stages.train", *_single(job, "results/single")], project)
    # exactly the command the Snakefile and dvc.yaml execute for this job
    res = subprocess.run([sys.executable, "-m", *job.module.split(), *job.argv],
                         cwd=project, env={**env(project), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(2 processes)" in res.stderr
    a = torch.load(project / "results/single/model.pt", weights_only=False)
    b = torch.load(project / job.outputs["model"], weights_only=False)
    for k in a["ema"]:
        torch.testing.assert_close(b["ema"][k], a["ema"][k], rtol=1e-4, atol=1e-6)
    # the InfoNoise estimator saw the same global batches in the same order
    for k in ("sums", "counts"):
        torch.testing.assert_close(b["sigma_dist"][k], a["sigma_dist"][k], rtol=1e-6, atol=1e-9)
    la = pd.read_parquet(project / "results/single/train_metrics.parquet")
    lb = pd.read_parquet(project / job.outputs["metrics"])
    la, lb = (x[x.metric == "train_loss"]["value"].to_numpy() for x in (la, lb))
    assert len(la) == 4 and abs(la - lb).max() / abs(la).max() < 1e-4
    assert b["provenance"]["processes"] == 2


def test_global_batch_must_divide(project):
    project, job = project
    spec = json.loads((project / job.spec_path).read_text())
    spec["training"]["batch_size"] = 63
    (project / "odd.json").write_text(json.dumps(spec))
    args = _single(job, "results/odd")
    args[args.index("--spec") + 1] = "odd.json"
    res = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "stages.train", *args],
                         cwd=project, env={**env(project), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "must be divisible by the number of processes" in res.stderr
