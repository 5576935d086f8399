"""Stages run by hand from spec files: a killed training run resumes bit-identically, a run whose spec
changed starts over, failures the user can fix print one clear line, and a non-editable install of the
package runs a stage."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline_helpers import REPO, edit_params, env, make_project, run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory):
    """A project with the smoke profile's spec files written and the toy dataset prepared."""
    from diffrepro.pipeline.params import load_params
    from diffrepro.pipeline.plan import plan, write_specs

    project = make_project(tmp_path_factory.mktemp("toy"))
    pl = plan(load_params(project / "params.yaml"), "smoke")
    write_specs(pl, project)
    run([sys.executable, "-m", "stages.prepare", *pl["prepare"]["toy-gmm-n500"].argv], project)
    return project, pl["train"]["toy-gmm-n500_edm_toy-cpu_s0"]


def _train(project, spec, out, data="results/data/toy-gmm-n500"):
    args = [sys.executable, "-m", "stages.train", "--spec", spec, "--data", data, "--out", out, "--device", "cpu"]
    return subprocess.Popen(args, cwd=project, env=env(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _kill_after_first_checkpoint(project, spec, out):
    """Start a training run and SIGKILL it once its first checkpoint is complete (its resume state is
    written after its EMA snapshot)."""
    victim = _train(project, spec, out)
    resume = project / out / "ckpt/resume.pt"
    deadline = time.time() + 300
    while not resume.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    return victim


def test_sigkill_then_rerun_resumes_and_matches_uninterrupted(toy_project):
    project, job = toy_project
    full = _train(project, job.spec_path, "results/full")
    assert full.wait(timeout=600) == 0, full.stderr.read()

    victim = _kill_after_first_checkpoint(project, job.spec_path, "results/killed")
    assert victim.returncode == -signal.SIGKILL, "the run must be killed mid-training"
    assert not (project / "results/killed/model.pt").exists()
    # a kill between an atomic write and its rename can leave a hidden temporary, never a partial file under
    # a final name (the resumed run below loads the checkpoints it finds); the restart clears temporaries
    from diffrepro.io import _TEMPORARY
    assert all(_TEMPORARY.match(p.name) for p in (project / "results/killed").rglob(".*") if p.is_file())
    (project / "results/killed/ckpt/.resume.pt.k1lled00.pt").write_bytes(b"partial")   # as if it had landed there

    resumed = _train(project, job.spec_path, "results/killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resuming from checkpoint at step" in err
    assert not [p for p in (project / "results/killed").rglob(".*") if p.is_file()], "no partial files left"
    a = torch.load(project / "results/full/model.pt", weights_only=False)
    b = torch.load(project / "results/killed/model.pt", weights_only=False)
    assert a["ema"].keys() == b["ema"].keys() and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    ma = pd.read_parquet(project / "results/full/train_metrics.parquet")
    mb = pd.read_parquet(project / "results/killed/train_metrics.parquet")
    pd.testing.assert_series_equal(ma[ma.metric == "train_loss"]["value"], mb[mb.metric == "train_loss"]["value"])
    # every checkpoint's EMA weights as a model file; the last one is the final model
    snap = torch.load(project / "results/killed/snapshots/step-00000600.pt", weights_only=False)
    assert all(torch.equal(snap["ema"][k], b["ema"][k]) for k in b["ema"]) and snap["steps"] == 600
    assert b["spec"]["run"] == "toy-gmm-n500_edm_toy-cpu_s0" and b["provenance"]["params_hash"]


def test_checkpoints_of_another_spec_are_not_resumed(toy_project):
    project, job = toy_project
    _kill_after_first_checkpoint(project, job.spec_path, "results/changed")
    spec = json.loads((project / job.spec_path).read_text())
    spec["training"]["lr"] = 1e-3
    (project / "changed.json").write_text(json.dumps(spec))
    rerun = _train(project, "changed.json", "results/changed")
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "belong to other parameters" in err and "resuming" not in err


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(toy_project):
    project, job = toy_project
    spec = json.loads((project / job.spec_path).read_text())
    spec["training"]["lr"] = 1e12
    (project / "diverge.json").write_text(json.dumps(spec))
    proc = _train(project, "diverge.json", "results/diverged")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1
    assert "error: training loss became" in err and "Lower the learning rate" in err and "Traceback" not in err
    assert not (project / "results/diverged/model.pt").exists()


def test_corrupt_dataset_fails_with_instructions(toy_project):
    project, job = toy_project
    shutil.copytree(project / "results/data/toy-gmm-n500", project / "results/data/corrupt")
    arr = project / "results/data/corrupt/train.npy"
    arr.write_bytes(arr.read_bytes()[:-8] + b"\x00" * 8)
    proc = _train(project, job.spec_path, "results/corrupt", data="results/data/corrupt")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "train.npy" in err and "prepare" in err and "Traceback" not in err
    assert not (project / "results/corrupt/model.pt").exists()


def test_missing_fashion_mnist_source_says_what_to_do(toy_project, tmp_path):
    project, _ = toy_project
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run([sys.executable, "-m", "stages.prepare", "--spec", "results/specs/prepare/fmnist-n300.json",
               "--out", "results/data/nowhere", "--source", empty], project, check=False)
    assert res.returncode == 1
    assert str(empty) in res.stderr and "source" in res.stderr and "Traceback" not in res.stderr
    assert not (project / "results/data/nowhere").exists()


def test_a_bug_keeps_its_traceback(toy_project):
    project, _ = toy_project
    (project / "bad.json").write_text(json.dumps({"stage": "train", "method": {"name": "no-precond"},
                                                  "training": {"network": "mlp-small", "steps": 2}, "seed": 0}))
    res = run([sys.executable, "-m", "stages.train", "--spec", "bad.json", "--data", "results/data/toy-gmm-n500",
               "--out", "results/bad", "--device", "cpu"], project, check=False)
    assert res.returncode != 0 and "Traceback" in res.stderr and "KeyError" in res.stderr


def test_training_one_model_by_hand_from_a_spec_you_write(tmp_path):
    """The README's example, as written there: two small JSON files and two commands, no params.yaml."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("echo '{\"dataset\""):]
    block = block[:block.index("```")].replace(".venv/bin/python", sys.executable)
    res = subprocess.run(["bash", "-euc", block], cwd=tmp_path, env={**env(), "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"step 500/500 +loss", res.stderr)
    model = torch.load(tmp_path / "results/runs/mine/model.pt", weights_only=False)
    assert model["spec"]["method"]["mask"]["ratio"] == 0.5 and model["steps"] == 500
    assert len(list((tmp_path / "results/runs/mine/snapshots").iterdir())) == 5


def test_non_editable_install_runs_a_stage(tmp_path):
    """`pip install .` (not editable) ships the params schema and the stages: plan and prepare from outside
    the source tree. Dependencies come from this environment (no download)."""
    import site
    import sysconfig

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("diffrepro", "stages", "workflow"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # this environment's packages (torch, numpy, ...) but not its editable diffrepro: a .pth lists paths only
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib) / "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", src], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    work = tmp_path / "work"
    work.mkdir()
    clean = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    where = subprocess.run([py, "-c", "import diffrepro, stages; print(diffrepro.__file__, stages.__file__)"],
                           cwd=work, env=clean, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where and str(REPO) not in where, where
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    res = subprocess.run([py, "-m", "workflow.plan", "--profile", "toy"], cwd=work, env=clean, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([py, "-m", "stages.prepare", "--spec", "results/specs/prepare/toy-gmm-n16.json",
                          "--out", "results/data/toy-gmm-n16"], cwd=work, env=clean, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((work / "results/data/toy-gmm-n16/manifest.json").read_text())["n_train"] == 16
