"""params.yaml validation: errors name the bad key, with hints where YAML misleads; what a schema cannot
say (subset sizes, checkpoints, references) is checked before anything runs."""
from pathlib import Path

import pytest
import yaml

from diffrepro.pipeline.params import ParamsError, analysis_steps, load_params, validate_params
from diffrepro.pipeline.plan import plan

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_committed_params_are_valid_and_every_profile_plans():
    p = load_params(REPO / "params.yaml")
    for profile in p["profiles"]:
        pl = plan(p, profile)
        assert pl["train"] and pl["report"]


def _smoke_fmnist(p):
    return next(e for e in p["profiles"]["smoke"]["experiments"] if e["dataset"] == "fmnist")


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p["methods"]["edm"].update(precnd="edm"), "methods.edm.precnd: unknown key (known: mask, precond"),
    (lambda p: p["methods"]["sparse-50"]["mask"].update(ratoi=0.5), "methods.sparse-50.mask.ratoi: unknown key"),
    (lambda p: p["methods"]["sparse-50"].update(mask={"ratio": 1.5}), "methods.sparse-50.mask.ratio: 1.5 is greater"),
    (lambda p: p["methods"]["vp"].update(precond="vpp"), "methods.vp.precond: 'vpp' is not one of"),
    (lambda p: p["training"]["tiny-cpu"].update(steps=-3), "training.tiny-cpu.steps"),
    (lambda p: p["training"]["tiny-cpu"].update(lr="2e-3"), "write 2.0e-3"),
    (lambda p: p["training"]["tiny-cpu"].update(network="resnet"), "training.tiny-cpu.network: unknown preset 'resnet'"),
    (lambda p: p["training"]["tiny-cpu"].update(compile_mode="fastest"), "training.tiny-cpu.compile_mode"),
    (lambda p: _smoke_fmnist(p)["methods"].append("nope"), "'nope' is not defined under methods"),
    (lambda p: _smoke_fmnist(p).update(sizes=[300000]),
     "sizes[0]: 300000 training examples, but dataset 'fmnist' has 60000"),
    (lambda p: p["profiles"]["smoke"]["fid_reference"].update(fmnist=70000), "fid_reference.fmnist: 70000 reference"),
    (lambda p: p.update(profile="huge"), "profile: 'huge' is not defined"),
    (lambda p: p["profiles"]["smoke"]["experiments"][0].update(training="tiny-cpu"), "needs an MLP network"),
    (lambda p: _smoke_fmnist(p).update(analysis_steps=[150]), "analysis_steps: step 150 is not a checkpoint"),
    (lambda p: _smoke_fmnist(p).update(reference="heun-256"),
     "experiments[1].reference: 'heun-256' is not one of the experiment's sampling entries (heun-18)"),
    (lambda p: p["profiles"]["smoke"].update(fid_heldout={"cifar": None}), "fid_heldout.cifar: not defined"),
    (lambda p: (p["datasets"]["fmnist"].pop("heldout_split"), p["profiles"]["smoke"].update(fid_heldout={"fmnist": None})),
     "fid_heldout.fmnist: FID against the held-out split needs an image dataset whose held-out images lie apart"),
    (lambda p: p["profiles"]["smoke"].update(targetvar={"ref_batch": [64]}), "targetvar.ref_batch: unknown key"),
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


def test_yaml_reads_exponent_without_point_as_text():
    """The trap the hint is for: YAML 1.1 (PyYAML, Snakemake) reads 2e-3 as a string."""
    assert yaml.safe_load("lr: 2e-3")["lr"] == "2e-3" and yaml.safe_load("lr: 2.0e-3")["lr"] == 0.002


def test_held_out_images_come_off_the_training_split(params):
    params["profiles"] = {"smoke": params["profiles"]["smoke"]}
    fmnist = params["datasets"]["fmnist"]
    fmnist.update(heldout_split="train", n_heldout=1000)
    _smoke_fmnist(params).update(sizes=[59001])
    with pytest.raises(ParamsError, match="has 59000"):
        validate_params(params)
    _smoke_fmnist(params).update(sizes=[59000])
    validate_params(params)


@pytest.mark.parametrize("value,expected", [
    ([100, 300, 200], [100, 200, 300]),
    ([0.25, 1.0], [150, 600]),
    ({"every": 150}, [150, 300, 450, 600]),
    ({"every": 0.5}, [300, 600]),
    (None, []),
])
def test_analysis_steps_as_steps_fractions_or_every_k(value, expected):
    assert analysis_steps(value, {"steps": 600}) == expected


def test_analysis_steps_forms_are_validated(params):
    exp = _smoke_fmnist(params)
    exp["analysis_steps"] = {"every": 0.5}            # tiny-cpu: checkpoints every 100 of 200 steps
    validate_params(params)
    exp["analysis_steps"] = {"every": 0.3}            # 60 steps: not a checkpoint
    with pytest.raises(ParamsError, match="step 60 is not a checkpoint"):
        validate_params(params)
    exp["analysis_steps"] = {"each": 100}
    with pytest.raises(ParamsError, match=r"analysis_steps.each: unknown key"):
        validate_params(params)


def test_config_overrides_read_as_text_get_their_types_back(params):
    """Snakemake parses nested --config values with YAML's BaseLoader: every scalar arrives as a string."""
    from diffrepro.pipeline.params import typed_overrides

    import copy

    over = copy.deepcopy(params)
    over["evaluation"].update(memorization={"threshold": "0.3"}, sample_compile="true")
    over["profile"] = "small"
    over["profiles"]["smoke"]["experiments"][1]["sizes"] = ["100", "200"]
    typed = typed_overrides(over, params)
    assert typed["evaluation"]["memorization"]["threshold"] == 0.3 and typed["evaluation"]["sample_compile"] is True
    assert typed["profiles"]["smoke"]["experiments"][1]["sizes"] == [100, 200] and typed["profile"] == "small"
    validate_params(typed)
