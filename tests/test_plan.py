"""The planner and the stage contract: every parameter a stage uses is in its job's spec (a change rewrites
exactly the specs of the jobs that use it), spec files are rewritten only when they change, a dataset is
identified by its content, code closures are exact, and stages stand alone."""
import ast
import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from diffrepro.pipeline.code import import_closure
from diffrepro.pipeline.params import validate_params
from diffrepro.pipeline.plan import CLI, STAGES, plan, spec_text, write_specs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _specs(params, profile="smoke"):
    return {(j.stage, j.key): spec_text(j.spec) for j in plan(params, profile).all_jobs()}


def _changed(params, edit, profile="smoke"):
    """{stage: number of jobs} whose spec an edit of params changes (the job set must stay the same)."""
    before = _specs(params, profile)
    edited = copy.deepcopy(params)
    edit(edited)
    after = _specs(edited, profile)
    assert before.keys() == after.keys(), "the edit must not add or remove jobs"
    counts = {}
    for job in before:
        if before[job] != after[job]:
            counts[job[0]] = counts.get(job[0], 0) + 1
    return counts


def _set(path, value):
    def edit(p):
        node = p
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


# smoke: 5 toy runs + 2 Fashion-MNIST runs (FID for those two), the EDM one analysed at 2 checkpoints
@pytest.mark.parametrize("path,value,expected", [
    (("evaluation", "memorization", "threshold"), 0.3, {"memorize": 7, "memtrace": 2}),
    (("evaluation", "fid", "batch_size"), 32, {"fidref": 1, "fid": 2, "memtrace": 2}),
    (("evaluation", "fid", "mode"), "legacy_tensorflow", {"fidref": 1, "fid": 2, "memtrace": 2}),
    (("evaluation", "sample_compile"), True, {"sample": 7}),
    (("evaluation", "sample_batch_size"), 100, {"sample": 5}),       # the toys' 500 samples; 64 images stay one batch
    (("profiles", "smoke", "analysis", "sigmas"), 9, {"gap": 2}),
    (("profiles", "smoke", "analysis", "n_per_set"), 50, {"gap": 2}),
    (("profiles", "smoke", "analysis", "seed"), 1, {"gap": 2}),
    (("profiles", "smoke", "analysis", "memtrace_samples"), 16, {"memtrace": 2}),
    (("profiles", "smoke", "analysis", "trajectory_samples"), 16, {"trajectory": 1}),
    (("profiles", "smoke", "toy_study", "eps"), 0.05, {"toystudy": 1}),
    # a run's spec is also in the aggregate's manifest (its metadata columns)
    (("methods", "edm", "sigma_dist", "P_mean"), -1.1, {"train": 2, "aggregate": 1}),
    (("training", "tiny-cpu", "lr"), 0.001, {"train": 2, "aggregate": 1}),
    (("sampling", "heun-18", "num_steps"), 17, {"sample": 7, "aggregate": 1}),
    (("sampling", "euler-8", "num_steps"), 9, {}),                   # not used by the smoke profile
    (("datasets", "fmnist", "n_heldout"), 500, {"prepare": 1, "train": 2, "aggregate": 1}),
    (("profiles", "smoke", "device"), "cpu", {}),                    # where to run is not what is computed
])
def test_a_parameter_change_rewrites_exactly_the_specs_of_its_jobs(params, path, value, expected):
    assert _changed(params, _set(path, value)) == expected


def test_every_parameter_of_the_analysis_block_reaches_a_spec(params):
    """No analysis parameter is dead: each one changes at least one spec (the memtrace threshold did not)."""
    from diffrepro.pipeline.plan import ANALYSIS_DEFAULTS

    for key, value in ANALYSIS_DEFAULTS.items():
        assert _changed(params, _set(("profiles", "smoke", "analysis", key), value + 1)), key


def test_claims_profile_plans_the_pilot_and_blocks_a_to_c(params):
    """methods.md section 6's runs: the pilot; block A (8 arms x 3 seeds to T on the full set, eta = 0.98 also at
    2T); block B (N in {100, 300, 1000, 3000} x eta in {0, 0.9} x 2 seeds, the medium width at N = 1k, 3k);
    block C (E1's sampler sweep with its Heun-256 reference on block A's EDM models, the same runs)."""
    pl = plan(params, "claims")
    runs = {(j.spec["dataset"]["n_train"], j.spec["method"]["name"], j.spec["training"]["name"], j.spec["seed"])
            for j in pl["train"].values()}
    pilot = {(60000, "edm", "claims-pilot", 0)}
    block_a = {(60000, m, "claims-small", s) for m in ("edm", "vp", "ve", "sparse-50", "sparse-90", "sparse-98",
                                                        "infonoise", "stf-4096") for s in range(3)}
    block_a |= {(60000, "sparse-98", "claims-small-2T", s) for s in range(3)}
    block_b = {(n, m, "claims-small", s) for n in (100, 300, 1000, 3000) for m in ("edm", "sparse-90") for s in (0, 1)}
    block_b |= {(n, "edm", "claims-medium", s) for n in (1000, 3000) for s in (0, 1)}
    assert runs == pilot | block_a | block_b
    sweep = {j.spec["sampling"]["name"] for j in pl["sample"].values()
             if j.spec["run"] == "fmnist-n60000_edm_claims-small_s0"}
    block_c = {f"heun-{n}" for n in (5, 7, 9, 13, 25, 32, 256)} | {f"euler-{n}" for n in (8, 16, 32, 64, 128, 256)}
    assert sweep == block_c | {"heun-18"}, "block A's evaluation and block C's sweep, on the same model"
    assert all(len([j for j in pl["sample"].values() if j.spec["run"] == f"fmnist-n60000_edm_claims-small_s{s}"])
               == 14 for s in range(3)), "block C samples block A's three EDM seeds"
    pilot_curve = {j.spec["step"] for j in pl["memtrace"].values() if j.spec["run"].endswith("claims-pilot_s0")}
    assert pilot_curve == set(range(4000, 80001, 4000)), "the pilot's FID every 5% of its run"
    assert {j.spec["num_samples"] for j in pl["memtrace"].values() if j.spec["run"].endswith("claims-pilot_s0")} \
        == {10000}, "the pilot's curve on 10,000 samples per checkpoint"
    assert "GPU-hours" in (REPO / "params.yaml").read_text().split("\n  claims:")[1].split("\n  toy:")[0]


def test_claims_profile_plans_each_rows_measurement(params):
    """E1: every sweep point's RMSE to the Heun-256 samples of its own run; S3: every final evaluation also
    scored against the held-out split; T1: |R| up to 4,096 on the full set."""
    pl = plan(params, "claims")
    run = "fmnist-n60000_edm_claims-small_s1"
    rmse = {k: j for k, j in pl["rmse"].items() if j.spec["run"] == run}
    assert {j.spec["eval"].split("__")[1] for j in rmse.values()} == (
        {f"heun-{n}" for n in (5, 7, 9, 13, 18, 25, 32)} | {f"euler-{n}" for n in (8, 16, 32, 64, 128, 256)})
    assert {j.inputs["reference"] for j in rmse.values()} == {f"results/evals/{run}__heun-256/samples.npy"}
    assert all(j.inputs["samples"] == f"results/evals/{k}/samples.npy" for k, j in rmse.items())
    assert len(pl["rmse"]) == 3 * 13, "only block C's three models have a reference"
    held = pl["fidref"]["fmnist-heldoutall"]
    assert held.spec["split"] == "heldout" and held.spec["dataset"]["heldout_split"] == "test"
    assert "split" not in pl["fidref"]["fmnist-refall"].spec
    assert all(j.spec["heldout"] and j.inputs["heldout_ref"] == "results/fidref/fmnist-heldoutall.npz"
               for j in pl["fid"].values())
    assert pl["targetvar"]["fmnist-n60000"].spec["ref_batches"] == [256, 1024, 4096]
    assert pl["targetvar"]["fmnist-n1000"].spec["ref_batches"] == [256], "|R| >= N is skipped"
    without = copy.deepcopy(params)
    del without["profiles"]["claims"]["fid_heldout"]
    pl2 = plan(without, "claims")
    assert set(pl2["fidref"]) == {"fmnist-refall"} and not any("heldout" in j.spec for j in pl2["fid"].values())
    manifest = pl["aggregate"]["claims"].spec
    assert manifest["evals"][f"{run}__euler-8"]["rmse"] == f"results/evals/{run}__euler-8/rmse.json"
    assert manifest["evals"][f"{run}__heun-256"]["rmse"] is None


@pytest.mark.parametrize("path,value,expected", [
    (("profiles", "claims", "targetvar", "ref_batches"), [256, 2048], {"targetvar": 2}),   # N = 3k, 60k
    (("profiles", "claims", "experiments", 0, "analysis_samples"), 5000, {"memtrace": 20}),
    (("profiles", "claims", "experiments", 6, "reference"), "euler-256", {"rmse": 0}),
])
def test_a_claims_measurement_parameter_rewrites_exactly_its_jobs(params, path, value, expected):
    if path[-1] == "reference":       # another reference: other jobs (euler-256 measured, heun-256 now measured)
        edited = copy.deepcopy(params)
        _set(path, value)(edited)
        keys = set(plan(edited, "claims")["rmse"])
        assert {k.split("__")[1] for k in keys if k.startswith("fmnist-n60000_edm_claims-small_s0")} == (
            {f"heun-{n}" for n in (5, 7, 9, 13, 18, 25, 32, 256)} | {f"euler-{n}" for n in (8, 16, 32, 64, 128)}), keys
        return
    assert _changed(params, _set(path, value), "claims") == expected


def test_profiles_without_the_new_measurements_keep_their_specs(params):
    """A profile that names no held-out FID or reference keeps its fid specs as before (no rerun)."""
    pl = plan(params, "smoke")
    assert not pl["rmse"] and set(pl["fidref"]) == {"fmnist-ref100"}
    assert all("heldout" not in j.spec and "heldout_ref" not in j.inputs for j in pl["fid"].values())


def test_dataset_identity_is_its_content_not_its_path(params, tmp_path):
    copy_dir = tmp_path / "fmnist-copy"
    copy_dir.mkdir()
    before = {(j.stage, j.key): (spec_text(j.spec), j.argv) for j in plan(params).all_jobs()}
    params["datasets"]["fmnist"]["source"] = str(copy_dir)
    after = {(j.stage, j.key): (spec_text(j.spec), j.argv) for j in plan(params).all_jobs()}
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in after.items()}, "no spec changes"
    moved = {k[0] for k in before if before[k][1] != after[k][1]}
    assert moved == {"prepare", "fidref"}, "only the command lines that read the raw files name the new place"
    assert f"--source {copy_dir}" in " ".join(plan(params)["prepare"]["fmnist-n300"].argv)


def test_your_own_data_is_identified_by_its_content_not_its_paths(params, tmp_path):
    """A folder of your own images (and its held-out folder) moved elsewhere changes no spec, only the command
    lines that read the raw files; a changed pixel changes the specs of everything built on it. The FID
    reference's spec carries what its statistics depend on: format, channels, resize and the content."""
    from data_helpers import make_images, with_dataset, write_png_folder

    images, labels = make_images(40, size=8, channels=3, classes=2, seed=1)
    write_png_folder(tmp_path / "a" / "train", images[:30], labels[:30])
    write_png_folder(tmp_path / "a" / "heldout", images[30:], labels[30:])
    entry = {"kind": "image", "format": "folder", "source": str(tmp_path / "a" / "train"),
             "heldout_source": str(tmp_path / "a" / "heldout"), "resolution": 8, "channels": 3, "resize": "none",
             "n_heldout": 10, "seed": 0}
    mine = with_dataset(params, entry, sizes=[20])
    mine["profiles"]["smoke"]["fid_reference"]["mine"] = 30
    mine = validate_params(mine)
    jobs = lambda p: {(j.stage, j.key): (spec_text(j.spec), j.argv) for j in plan(p).all_jobs()}  # noqa: E731
    before = jobs(mine)
    ref = plan(mine)["fidref"]["mine-ref30"].spec["dataset"]
    assert {k: ref[k] for k in ("format", "channels", "resize")} == {"format": "folder", "channels": 3, "resize": "none"}
    assert ref["fingerprint"].startswith("sha256:") and "source" not in ref and "heldout_source" not in ref
    prepare = " ".join(plan(mine)["prepare"]["mine-n20"].argv)
    assert f"--heldout-source {tmp_path / 'a' / 'heldout'}" in prepare

    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = copy.deepcopy(mine)
    moved["datasets"]["mine"].update(source=str(tmp_path / "b" / "train"), heldout_source=str(tmp_path / "b" / "heldout"))
    after = jobs(moved)
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in after.items()}, "no spec changes"
    assert {k[0] for k in before if before[k][1] != after[k][1]} == {"prepare", "fidref"}

    first = sorted((tmp_path / "b" / "heldout").rglob("*.png"))[0]     # one held-out image, one pixel
    from PIL import Image
    import numpy as np
    arr = np.asarray(Image.open(first)).copy()
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(first)
    changed = {k[0] for k, v in jobs(moved).items() if v[0] != after[k][0]}
    assert {"prepare", "fidref", "train", "aggregate"} <= changed     # the others follow through their inputs


def test_verified_datasets_are_identified_by_their_official_checksums():
    from diffrepro.data.identity import fingerprint

    fm = {"kind": "image", "name": "fashion_mnist"}
    assert fingerprint({**fm, "source": "/somewhere"}) == fingerprint({**fm, "source": None}) is not None
    assert fingerprint({"kind": "image", "name": "cifar10"}) != fingerprint(fm)
    assert fingerprint({"kind": "toy2d", "name": "gmm"}) is None


def test_spec_files_are_rewritten_only_when_their_content_changes(params, tmp_path):
    pl = plan(params)
    written = write_specs(pl, tmp_path)
    assert len(written) == len(pl.all_jobs())
    mtimes = {p: (tmp_path / p).stat().st_mtime_ns for p in written}
    assert write_specs(pl, tmp_path) == []
    params["evaluation"]["memorization"]["threshold"] = 0.3
    again = write_specs(plan(params), tmp_path)
    assert sorted(again) == sorted(j.spec_path for j in plan(params).all_jobs() if j.stage in ("memorize", "memtrace"))
    assert all((tmp_path / p).stat().st_mtime_ns == t for p, t in mtimes.items() if p not in again)
    spec = json.loads((tmp_path / again[0]).read_text())
    assert spec["threshold"] == 0.3 and spec["stage"] in ("memorize", "memtrace")


def test_run_metadata_travels_in_the_train_spec(params):
    job = plan(params)["train"]["fmnist-n300_vp_tiny-cpu_s0"]
    s = job.spec
    assert (s["run"], s["dataset"]["entry"], s["dataset"]["n_train"], s["method"]["name"], s["training"]["name"],
            s["seed"]) == ("fmnist-n300_vp_tiny-cpu_s0", "fmnist", 300, "vp", "tiny-cpu", 0)
    assert "source" not in s["dataset"] and s["dataset"]["fingerprint"].startswith("fashion_mnist:")


def test_two_experiments_planning_one_job_differently_is_an_error(params):
    from diffrepro.pipeline.plan import PlanError

    exps = params["profiles"]["smoke"]["experiments"]
    exps.append({**exps[-1], "num_samples": 32})
    with pytest.raises(PlanError, match="fmnist-n300_vp_tiny-cpu_s0__heun-18"):
        plan(validate_params(params))


def test_code_closure_follows_every_kind_of_import(tmp_path):
    pkg = tmp_path / "diffrepro"
    (pkg / "methods").mkdir(parents=True)
    (tmp_path / "stages").mkdir()
    files = {
        "diffrepro/__init__.py": "",
        "diffrepro/a.py": "from .b import f\n",
        "diffrepro/b.py": "import numpy\ndef f():\n    from diffrepro.methods import sparse\n",
        "diffrepro/methods/__init__.py": "",
        "diffrepro/methods/sparse.py": "from ..c import *\n",
        "diffrepro/c.py": "",
        "diffrepro/unused.py": "",
        "stages/__init__.py": "",
        "stages/s.py": "from diffrepro import a\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert import_closure("stages.s", tmp_path) == sorted(set(files) - {"diffrepro/unused.py"})


def test_code_closures_of_the_stages(tmp_path):
    train = import_closure("stages.train")
    assert {"stages/train.py", "diffrepro/training.py", "diffrepro/methods/sparse.py"} <= set(train)
    fid = import_closure("stages.fid")
    assert "diffrepro/metrics/fid.py" in fid and "diffrepro/methods/sparse.py" not in fid
    for stage in STAGES:
        files = import_closure(f"stages.{stage}")
        assert f"stages/{stage}.py" in files
        assert not [f for f in files if f.startswith(("diffrepro/pipeline/", "workflow/", "tests/"))], stage
        assert not [f for f in files if f.startswith("stages/") and f not in (f"stages/{stage}.py", "stages/__init__.py")]


def test_no_stage_imports_the_planner_or_another_stage():
    for path in sorted((REPO / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("diffrepro.pipeline", "stages", "workflow")), (path.name, name)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_takes_exactly_the_flags_the_planner_passes(stage, capsys):
    import importlib

    module = importlib.import_module(f"stages.{stage}")
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag, _ in CLI[stage]:
        assert f"--{flag}" in text, flag
    for gone in ("--params", "--job", "--run", "--profile", "--no-progress"):
        assert gone not in text


class _Parsed(Exception):
    pass


def test_every_planned_command_parses(params, monkeypatch):
    """Each job's command line is accepted by its stage's parser (stopped right after parsing)."""
    import argparse
    import importlib

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(parse(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for job in plan(params, "small").all_jobs() + plan(params, "smoke").all_jobs():
        module = importlib.import_module(f"stages.{job.stage}")
        with pytest.raises(_Parsed) as exc:
            module.main(job.argv)
        ns = exc.value.args[0]
        assert ns.spec == job.spec_path and ns.out == job.values["out"], job.command


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(capsys):
    from diffrepro.cli import SpecError, main_guard
    from diffrepro.data.sources import DatasetError

    for err in (DatasetError("train.npy is damaged; rerun prepare"), SpecError("spec x.json not found"),
                FileNotFoundError("results/x is missing")):
        def fail(err=err):
            raise err
        with pytest.raises(SystemExit) as exc:
            main_guard(fail)
        assert exc.value.code == 1
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {err}"
    with pytest.raises(KeyError):
        main_guard(lambda: {}["missing"])


def test_load_spec_checks_the_stage_and_the_keys(tmp_path):
    from diffrepro.cli import SpecError, load_spec

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"stage": "gap", "sigmas": 8}))
    assert load_spec(path, "gap", ["sigmas"])["sigmas"] == 8
    with pytest.raises(SpecError, match="is for stage 'gap', not 'train'"):
        load_spec(path, "train")
    with pytest.raises(SpecError, match="lacks n_per_set"):
        load_spec(path, "gap", ["sigmas", "n_per_set"])
    path.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(path, "gap")


def test_committed_dvc_yaml_is_current():
    from workflow.make_dvc import render

    assert (REPO / "dvc.yaml").read_text() == render(str(REPO / "params.yaml")), \
        "dvc.yaml is out of date: python -m workflow.make_dvc"


def test_dvc_yaml_reads_like_dvc_users_expect(params):
    from workflow.make_dvc import render

    stages = yaml.safe_load(render(str(REPO / "params.yaml")))["stages"]
    assert stages["plan"]["params"] == [{"params.yaml": None}]
    train = stages["train"]
    assert "fmnist-n300_edm_tiny-cpu_s0" in train["foreach"]
    assert {"results/specs/train/${key}.json", "stages/train.py", "diffrepro/methods/sparse.py"} <= set(train["do"]["deps"])
    assert "README.md" not in str(stages) and "tests/" not in str(stages)
    assert stages["report"]["metrics"] == [{"reports/smoke/summary.json": {"cache": True}}]
    assert {p for d in stages["aggregate"]["plots"] for p in d} == {"reports/smoke/curves/loss", "reports/smoke/curves/fid"}
    assert not [k for st in stages.values() for k in st.get("foreach", {}) if k.startswith("d") and k[1:].isdigit()]
