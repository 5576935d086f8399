"""The `paper` profile plans EDM's CIFAR-10 protocol (methods.md section 1): the DDPM++ network trained as EDM
trained it, with non-leaking augmentation at p = 0.12, scored by FID in the papers' mode on 50k samples
against the training set's statistics, over 3 seeds. A profile's own FID settings override evaluation.fid."""
from pathlib import Path

import pytest
import yaml

from diffrepro.models import network_config
from diffrepro.pipeline.params import ParamsError, validate_params
from diffrepro.pipeline.plan import plan
from diffrepro.presets import UNET_PRESETS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_paper_profile_is_edm_cifar10(params):
    pl = plan(params, "paper")
    (ref,) = pl["fidref"].values()
    assert ref.spec["count"] is None and ref.spec["dataset"]["name"] == "cifar10"       # the whole training split
    assert ref.spec["fid"]["mode"] == "legacy_tensorflow"
    assert {j.spec["mode"] for j in pl["fid"].values()} == {"legacy_tensorflow"}
    assert {j.spec["num_samples"] for j in pl["sample"].values()} == {50_000}
    assert {j.spec["sampling"]["num_steps"] for j in pl["sample"].values()} == {18}     # Heun, 35 NFE
    runs = list(pl["train"].values())
    assert sorted(r.spec["seed"] for r in runs) == [0, 1, 2]
    assert {r.spec["dataset"]["n_train"] for r in runs} == {50_000}
    t = runs[0].spec["training"]
    assert t["batch_size"] * t["steps"] == 200_000_000 and t["batch_size"] == 512 and t["lr"] == 1e-3
    assert (t["lr_warmup_img"], t["ema_halflife_img"], t["ema_rampup_ratio"]) == (10_000_000, 500_000, 0.05)
    assert t["augment"] == 0.12 and network_config(t, (3, 32, 32))["augment_dim"] == 9
    net = UNET_PRESETS[t["network"]]
    assert (net["model_channels"], tuple(net["channel_mult"]), net["num_blocks"], tuple(net["attn_resolutions"]),
            net["dropout"]) == (128, (2, 2, 2), 4, (16,), 0.13)
    assert runs[0].spec["method"]["precond"] == "edm"
    assert "augment" not in params["training"]["tiny-cpu"]       # off unless a training entry asks for it


def test_a_profile_fid_setting_overrides_evaluation_fid(params):
    assert {j.spec["mode"] for j in plan(params, "smoke")["fid"].values()} == {"clean"}
    params["profiles"]["smoke"]["fid"] = {"mode": "legacy_tensorflow", "batch_size": 16}
    validate_params(params)
    pl = plan(params, "smoke")
    assert {(j.spec["mode"], j.spec["batch_size"]) for j in pl["fid"].values()} == {("legacy_tensorflow", 16)}
    assert {j.spec["fid"]["mode"] for j in pl["fidref"].values()} == {"legacy_tensorflow"}
    params["profiles"]["smoke"]["fid"] = {"mode": "tensorflow"}
    with pytest.raises(ParamsError, match="tensorflow"):
        validate_params(params)
