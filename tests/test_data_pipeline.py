"""Your own data and the `paper` profile through the real pipeline (Snakemake), on CPU: a PNG folder and an
.npz of the same images each run to a report, and the `paper` profile runs on a small CIFAR-10-format
archive in the papers' FID mode."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from data_helpers import paper_on_small_archive, user_dataset_entries
from pipeline_helpers import make_project, snakemake

pytestmark = pytest.mark.integration


def _tiny_training(params, name="tiny-own", steps=40):
    params["training"][name] = {**params["training"]["tiny-cpu"], "steps": steps, "checkpoint_every": steps,
                                "log_every": steps // 2}
    return name


def test_png_folder_and_npz_run_through_the_pipeline_to_a_report(tmp_path):
    project = make_project(tmp_path / "p")
    entries = user_dataset_entries(project / "userdata", n=80)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["pngs"] = {**entries["pngs"], "source": "userdata/pngs"}     # relative to the project
    params["datasets"]["arr"] = {**entries["arr"], "source": "userdata/images.npz"}
    tname = _tiny_training(params)
    params["profiles"]["own"] = {
        "device": "cpu", "fid_reference": {"pngs": 32, "arr": 32},
        "experiments": [{"dataset": d, "sizes": [50], "methods": ["edm"], "training": tname, "seeds": [0],
                         "sampling": ["heun-5"], "num_samples": 24} for d in ("pngs", "arr")]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(project, "--config", "profile=own")
    assert (project / "reports/own/report.md").exists()
    data = {d: sorted((project / "results/data").glob(f"{d}-n50*"))[0] for d in ("pngs", "arr")}
    manifests = {d: json.loads((p / "manifest.json").read_text()) for d, p in data.items()}
    assert manifests["pngs"]["source"]["content"] == manifests["arr"]["source"]["content"]
    assert np.array_equal(np.load(data["pngs"] / "train.npy"), np.load(data["arr"] / "train.npy"))
    metrics = pd.read_parquet(project / "reports/own/metrics.parquet")
    fid = metrics[metrics.metric == "fid"]
    assert set(fid.dataset) == {"pngs", "arr"} and set(fid.fid_mode) == {"clean"} and fid.value.gt(0).all()


def test_paper_profile_runs_on_a_small_cifar10_archive(tmp_path):
    project = make_project(tmp_path / "p")
    entries = user_dataset_entries(project / "userdata", n=60)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params = paper_on_small_archive(params, {**entries["cifar"], "source": "userdata/cifar-10-python.tar.gz"})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(project, "--config", "profile=paper")
    assert (project / "reports/paper/report.md").exists()
    fids = [json.loads(p.read_text()) for p in (project / "results/evals").glob("*/fid.json")]
    assert len(fids) == 1 and fids[0]["mode"] == "legacy_tensorflow" and fids[0]["n_samples"] == 16
    ref = np.load(project / fids[0]["ref"], allow_pickle=False)
    meta = json.loads(str(ref["meta"]))
    assert meta["mode"] == "legacy_tensorflow" and meta["image_shape"] == [32, 32, 3] and int(ref["n"]) == 32
