"""params.yaml validation and grid expansion: errors name the bad key; job keys hash exactly their
own parameters."""
import copy
from pathlib import Path

import pytest
import yaml

from diffrepro.pipeline.grid import plan
from diffrepro.pipeline.params import ParamsError, load_params, validate_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_are_valid_and_every_profile_plans():
    p = load_params(REPO / "params.yaml")
    for profile in p["profiles"]:
        pl = plan(p, profile)
        assert pl["train"] and pl["report"]


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p["methods"]["edm"].update(precnd="edm"), "methods.edm: unknown key"),
    (lambda p: p["methods"]["vp"].update(precond="vpp"), "methods.vp.precond"),
    (lambda p: p["training"]["tiny-cpu"].update(steps=-3), "training.tiny-cpu.steps"),
    (lambda p: p["training"]["tiny-cpu"].update(network="resnet"), "training.tiny-cpu.network: unknown preset 'resnet'"),
    (lambda p: p["training"]["tiny-cpu"].update(compile_mode="fastest"), "training.tiny-cpu.compile_mode"),
    (lambda p: p["profiles"]["smoke"]["experiments"][1]["methods"].append("nope"), "'nope' is not defined under methods"),
    (lambda p: p.update(profile="huge"), "profile: 'huge' is not defined"),
    (lambda p: p["profiles"]["smoke"]["experiments"][0].update(training="tiny-cpu"), "needs an MLP network"),
])
def test_errors_name_the_offending_key(params, edit, needle):
    edit(params)
    with pytest.raises(ParamsError) as exc:
        validate_params(params)
    assert needle in str(exc.value)


def test_fast_and_compile_mode_reach_the_trainer_and_fp32_turns_them_off():
    from stages.train import train_config
    cfg = train_config({"steps": 10, "fast": True, "compile_mode": "reduce-overhead", "precision": "bf16"}, 0, False)
    assert (cfg.fast, cfg.compile_mode, cfg.precision) == (True, "reduce-overhead", "bf16")
    cfg = train_config({"steps": 10, "fast": True, "compile_mode": "reduce-overhead", "precision": "bf16"}, 0, True)
    assert (cfg.fast, cfg.precision) == (False, "fp32")


def test_keys_change_only_for_jobs_whose_parameters_change(params):
    before = plan(validate_params(copy.deepcopy(params)), "smoke")
    params["methods"]["vp"]["sigma_dist"] = {"kind": "loguniform", "sigma_min": 0.01, "sigma_max": 80.0}
    params["sampling"]["euler-18"]["num_steps"] = 9          # not used by the smoke profile
    after = plan(validate_params(params), "smoke")
    changed = {s: set(after[s]) - set(before[s]) for s in ("prepare", "fidref", "train", "sample", "fid", "memorize")}
    assert changed["prepare"] == set() and changed["fidref"] == set()
    assert len(changed["train"]) == 1 and "_vp_" in next(iter(changed["train"]))
    assert len(changed["sample"]) == len(changed["fid"]) == len(changed["memorize"]) == 1


def test_subsets_share_the_reference_and_keys_are_readable(params):
    pl = plan(validate_params(params), "small")
    assert len(pl["fidref"]) == 1
    keys = sorted(pl["train"])
    assert any(k.startswith("fmnist-n500_edm_small-gpu_s1_") for k in keys)


def test_adding_an_analysis_checkpoint_adds_only_its_jobs(params):
    before = plan(validate_params(copy.deepcopy(params)), "small")
    params["profiles"]["small"]["experiments"][0]["analysis_steps"] = [500, 1000, 1500, 2000]
    params["profiles"]["small"]["experiments"][0]["analysis_steps"].remove(1500)
    fewer = plan(validate_params(copy.deepcopy(params)), "small")
    for stage in ("prepare", "train", "sample", "fid", "memorize", "trajectory"):
        assert set(fewer[stage]) == set(before[stage]), stage
    first = {k for k in before["gap"] if k.endswith("__step1500") and "_edm_" in k and "-n60000" not in k}
    assert set(before["gap"]) - set(fewer["gap"]) == first
    assert len(first) == 4          # the first experiment's 2 sizes x 2 seeds


def test_analysis_steps_must_be_checkpoints(params):
    params["profiles"]["smoke"]["experiments"][1]["analysis_steps"] = [150]
    with pytest.raises(ParamsError, match="analysis_steps: 150 is not a checkpoint"):
        validate_params(params)
