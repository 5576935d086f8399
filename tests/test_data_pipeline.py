"""Your own data and the `paper` profile through the real pipeline (Snakemake), on CPU: a PNG folder and an
.npz of the same images each run through the smoke profile's image stages to a report, and the `paper` profile runs on a small CIFAR-10-format
archive in the papers' FID mode."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from data_helpers import paper_on_small_archive, user_dataset_entries
from diffrepro.data.sources import md5_file
from pipeline_helpers import BIN, make_project, run, snakemake

pytestmark = pytest.mark.integration


def own_data_smoke(params: dict, names) -> dict:
    """The smoke profile's analysed image experiment (every image stage: prepare, targetvar, fidref, train,
    sample, fid, memorize, gap, memtrace, trajectory, aggregate, report), once per dataset in `names` in place
    of Fashion-MNIST; the 2D toys, which do not read images, and the VP run, which passes through the same
    stages, are left out (time)."""
    smoke = params["profiles"]["smoke"]
    image = [e for e in smoke["experiments"] if e["dataset"] == "fmnist" and e.get("analysis_steps")]
    return {**{k: v for k, v in smoke.items() if k not in ("experiments", "toy_study", "fid_reference")},
            "device": "cpu", "fid_reference": {d: smoke["fid_reference"]["fmnist"] for d in names},
            "experiments": [{**e, "dataset": d} for d in names for e in image]}


def test_png_folder_and_npz_run_through_the_smoke_pipeline_to_a_report(tmp_path):
    project = make_project(tmp_path / "p")
    entries = user_dataset_entries(project / "userdata", n=340)     # smoke trains on 300, 20 held out
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["pngs"] = {**entries["pngs"], "source": "userdata/pngs"}     # relative to the project
    params["datasets"]["arr"] = {**entries["arr"], "source": "userdata/images.npz"}
    params["profiles"]["own"] = own_data_smoke(params, ["pngs", "arr"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(project, "--config", "profile=own")
    assert "## FID" in (project / "reports/own/report.md").read_text()
    data = {d: project / f"results/data/{d}-n300" for d in ("pngs", "arr")}
    manifests = {d: json.loads((p / "manifest.json").read_text()) for d, p in data.items()}
    assert manifests["pngs"]["source"]["content"] == manifests["arr"]["source"]["content"]
    assert np.array_equal(np.load(data["pngs"] / "train.npy"), np.load(data["arr"] / "train.npy"))
    metrics = pd.read_parquet(project / "reports/own/metrics.parquet")
    every_stage = {"train_loss", "fid", "mem_fraction_memorized", "gap", "mem_fraction_ckpt", "fid_ckpt",
                   "traj_e_traj", "stf_target_trace"}
    for d in ("pngs", "arr"):
        mine = metrics[metrics.dataset == d]
        assert every_stage <= set(mine.metric), every_stage - set(mine.metric)
        fid = mine[mine.metric == "fid"]
        assert set(fid.method) == {"edm"} and set(fid.fid_mode) == {"clean"} and fid.value.gt(0).all()
    # the same pixels as PNGs or as an array: the same trained model (seeded), the same samples
    same = [sorted((project / "results/evals").glob(f"{d}-n300_edm_tiny-cpu_s0__heun-18"))[0] for d in ("pngs", "arr")]
    assert np.array_equal(np.load(same[0] / "samples.npy"), np.load(same[1] / "samples.npy"))


def test_paper_profile_runs_on_a_small_cifar10_archive(tmp_path):
    """The `paper` profile as written (EDM's method, sampler, augmentation p = 0.12, FID in legacy_tensorflow
    mode against the training split's statistics) with a tiny network, few steps and samples, one seed; the
    archive comes through the verified download (a file:// mirror, the archive's md5 given in the entry)."""
    project = make_project(tmp_path / "p")
    entries = user_dataset_entries(tmp_path / "mirror", n=60)
    archive = tmp_path / "mirror/cifar-10-python.tar.gz"
    cache = tmp_path / "cache"
    params = yaml.safe_load((project / "params.yaml").read_text())
    cifar = {**entries["cifar"], "source": None, "allow_download": True, "url": archive.as_uri()}
    params = paper_on_small_archive(params, cifar)
    assert params["profiles"]["paper"]["fid"]["mode"] == "legacy_tensorflow"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([BIN / "snakemake", "--cores", "2", "--config", "profile=paper"], project,
        extra_env={"DIFFREPRO_CACHE": str(cache)})
    assert md5_file(cache / "datasets/cifar10/cifar-10-python.tar.gz") == entries["cifar"]["md5"]   # downloaded, kept
    report = (project / "reports/paper/report.md").read_text()
    fid_rows = [line for line in report.split("## FID", 1)[1].split("\n## ", 1)[0].splitlines() if "ddpmpp-cifar" in line]
    assert len(fid_rows) == 1 and "legacy_tensorflow" in fid_rows[0]
    fids = [json.loads(p.read_text()) for p in (project / "results/evals").glob("*/fid.json")]
    assert len(fids) == 1 and fids[0]["mode"] == "legacy_tensorflow" and fids[0]["n_samples"] == 16
    ref = np.load(project / fids[0]["ref"], allow_pickle=False)
    meta = json.loads(str(ref["meta"]))
    assert meta["mode"] == "legacy_tensorflow" and meta["image_shape"] == [32, 32, 3] and int(ref["n"]) == 32
    (run_dir,) = (project / "results/runs").iterdir()
    model = torch.load(run_dir / "model.pt", weights_only=False)
    assert model["network"]["augment_dim"] == 9 and model["augment"]["p"] == 0.12


def test_claims_measurements_run_through_snakemake(tmp_path):
    """The claims profile's extra measurements, wired through the real pipeline at toy scale: FID against the
    held-out split (its own reference statistics from the test split), the sampler sweep's per-sample RMSE to
    the reference sampler's samples of the same run, and the target-variance |R| grid of the profile."""
    from diffrepro.metrics.sampler_error import per_sample_rmse

    project = make_project(tmp_path / "p")
    params = yaml.safe_load((project / "params.yaml").read_text())
    smoke = params["profiles"]["smoke"]
    params["profiles"]["measures"] = {
        "device": "cpu", "analysis": smoke["analysis"], "fid_reference": {"fmnist": 100},
        "fid_heldout": {"fmnist": 64}, "targetvar": {"ref_batches": [32, 128], "n_samples": 32},
        "experiments": [{"dataset": "fmnist", "sizes": [300], "methods": ["edm"], "training": "tiny-cpu",
                         "seeds": [0], "sampling": ["heun-5", "euler-8", "heun-256"], "num_samples": 32,
                         "reference": "heun-256"}]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(project, "--config", "profile=measures")
    metrics = pd.read_parquet(project / "reports/measures/metrics.parquet")
    held = metrics[metrics.metric == "fid_heldout"]
    assert sorted(held["sampling"]) == ["euler-8", "heun-256", "heun-5"] and (held["fid_ref_count"] == 64).all()
    train_fid = metrics[metrics.metric == "fid"].set_index("sampling")["value"]
    assert (held.set_index("sampling")["value"] != train_fid[held["sampling"]]).all()
    refs = {k: json.loads(str(np.load(project / f"results/fidref/fmnist-{k}.npz")["meta"]))
            for k in ("ref100", "heldout64")}
    assert refs["heldout64"]["split"] == "heldout" and refs["ref100"]["split"] == "train"
    assert refs["heldout64"]["pixels_sha256"] != refs["ref100"]["pixels_sha256"]      # the test split's pixels
    rmse = metrics[metrics.metric == "rmse_to_reference"].set_index("sampling")
    assert sorted(rmse.index) == ["euler-8", "heun-5"] and set(rmse["reference"]) == {"heun-256"}
    evals = project / "results/evals"
    ref = np.load(evals / "fmnist-n300_edm_tiny-cpu_s0__heun-256/samples.npy")
    for s in ("euler-8", "heun-5"):
        mine = np.load(evals / f"fmnist-n300_edm_tiny-cpu_s0__{s}/samples.npy")
        assert rmse.loc[s, "value"] == pytest.approx(per_sample_rmse(mine, ref).mean(), rel=1e-12)
        assert 0 < rmse.loc[s, "value"] < 1
    tv = metrics[metrics.metric == "stf_target_trace"]
    assert sorted(tv["ref_batch"].unique()) == [1, 32, 128]          # |R| = 1: the baseline's target
    assert "per-sample RMSE to the reference: " in (project / "reports/measures/report.md").read_text()
