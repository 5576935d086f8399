"""The measurements two claims need beyond a plain evaluation: E1's per-sample RMSE to a reference sampler on
the same latents (stage rmse) and S3's FID against the held-out split (a held-out fidref and the fid stage's
second reference), through the results table."""
import json

import numpy as np
import pandas as pd
import pytest

from data_helpers import make_images, write_npz
from diffrepro.cli import SpecError
from diffrepro.data import DatasetError, reference_images
from diffrepro.results import collect
from stages import rmse as rmse_stage


def _spec(path, stage, **body):
    path.write_text(json.dumps({"stage": stage, **body}))
    return str(path)


def test_rmse_stage_measures_each_sample_against_the_same_latent(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.integers(10, 240, size=(6, 8, 8, 1), dtype=np.uint8)
    shifted = ref.copy()
    shifted[:3] += 2                      # three samples off by 2 levels everywhere, three exact
    shifted[5, 0, 0, 0] += 9              # one value of one sample off by 9
    np.save(tmp_path / "a.npy", shifted)
    np.save(tmp_path / "ref.npy", ref)
    spec = _spec(tmp_path / "s.json", "rmse", eval="r__euler-8", run="r", reference="heun-256")
    rmse_stage.main(["--spec", spec, "--samples", str(tmp_path / "a.npy"), "--reference", str(tmp_path / "ref.npy"),
                     "--out", str(tmp_path / "rmse.json")])
    out = json.loads((tmp_path / "rmse.json").read_text())
    per = [2 / 127.5] * 3 + [0, 0, 9 / 127.5 / 8]          # [-1, 1] scale; one value of 64 off by 9/127.5
    assert out["reference"] == "heun-256" and out["n_samples"] == 6
    assert out["rmse_mean"] == pytest.approx(np.mean(per), rel=1e-12)
    assert out["rmse_median"] == pytest.approx(np.median(per), rel=1e-12)
    np.save(tmp_path / "short.npy", ref[:5])
    with pytest.raises(SpecError, match=r"short\.npy holds \(5, 8, 8, 1\).*same num_samples"):
        rmse_stage.main(["--spec", spec, "--samples", str(tmp_path / "short.npy"), "--reference",
                         str(tmp_path / "ref.npy"), "--out", str(tmp_path / "x.json")])


def test_heldout_reference_images_are_the_heldout_split(tmp_path):
    images, labels = make_images(30, size=8, channels=1, seed=1)
    held, held_labels = make_images(12, size=8, channels=1, seed=2)
    write_npz(tmp_path / "train.npz", images, labels)
    write_npz(tmp_path / "held.npz", held, held_labels)
    entry = {"key": "mine", "kind": "image", "format": "array", "source": str(tmp_path / "train.npz"),
             "heldout_source": str(tmp_path / "held.npz"), "n_heldout": 5, "seed": 0}
    got, _, _ = reference_images(entry, split="heldout")
    as_set = lambda x: {im.tobytes() for im in x}    # noqa: E731 (a folder or array is read in content order)
    assert len(got) == 12 and as_set(got) == as_set(held)   # all of the held-out split, not n_heldout of it
    assert reference_images(entry, count=4, split="heldout")[0].shape == (4, 8, 8, 1)
    carved = {k: v for k, v in entry.items() if k != "heldout_source"}
    with pytest.raises(DatasetError, match="datasets.mine: FID against the held-out split needs held-out images "
                                           "apart from the training pool"):
        reference_images(carved, split="heldout")


def test_results_table_reads_heldout_fid_and_rmse(tmp_path):
    run = "fmnist-n100_edm_t_s0"
    spec = {"method": {"name": "edm", "precond": "edm"}, "dataset": {"entry": "fmnist", "n_train": 100},
            "training": {"name": "t", "network": "small"}, "seed": 0}
    pd.DataFrame({"step": [10], "nimg": [100], "metric": ["train_loss"], "value": [0.5], "sigma_bin": [None],
                  "sigma": [None], "git_commit": ["abc"]}).to_parquet(tmp_path / "m.parquet")
    evals = {}
    for sampling, steps in (("euler-8", 8), ("heun-256", 256)):
        ev = tmp_path / sampling
        ev.mkdir()
        (ev / "info.json").write_text(json.dumps({"nfe": steps, "wall_time_s": 1.0}))
        (ev / "fid.json").write_text(json.dumps({"fid": 20.0, "ref": "tr.npz", "ref_count": 60000, "mode": "clean",
                                                 "fid_heldout": 23.5, "heldout_ref": "ho.npz",
                                                 "heldout_ref_count": 10000}))
        evals[f"{run}__{sampling}"] = {"run": run, "sampling": {"name": sampling, "sampler": "euler", "num_steps": steps},
                                       "num_samples": 50, "info": str(ev / "info.json"), "fid": str(ev / "fid.json"),
                                       "rmse": None, "memorize": None}
    (tmp_path / "euler-8" / "rmse.json").write_text(json.dumps({"reference": "heun-256", "rmse_mean": 0.031}))
    evals[f"{run}__euler-8"]["rmse"] = str(tmp_path / "euler-8" / "rmse.json")
    df, _ = collect({"runs": {run: {"spec": spec, "metrics": str(tmp_path / "m.parquet")}}, "evals": evals})
    held = df[df["metric"] == "fid_heldout"]
    assert len(held) == 2 and (held["value"] == 23.5).all() and (held["fid_ref_count"] == 10000).all()
    r = df[df["metric"] == "rmse_to_reference"]
    assert len(r) == 1 and r["value"].item() == 0.031 and r["reference"].item() == "heun-256"
    assert r["sampling"].item() == "euler-8" and r["nfe"].item() == 8


def test_fid_stage_scores_against_the_heldout_split_from_one_feature_pass(tmp_path):
    """Real Inception on CPU: fid.json's two values equal FID against each reference computed alone."""
    from diffrepro.metrics import fid
    from stages import fid as fid_stage

    samples, _ = make_images(6, size=32, channels=1, seed=3)
    ref_a, _ = make_images(5, size=32, channels=1, seed=4)
    ref_b, _ = make_images(5, size=32, channels=1, seed=5)
    for name, imgs in (("train", ref_a), ("held", ref_b)):
        feats = fid.features_from_array(imgs, progress=False)
        fid.save_statistics(tmp_path / f"{name}.npz", *fid.feature_statistics(feats), len(imgs),
                            fid.statistics_meta("clean", imgs.shape[1:]))
    np.save(tmp_path / "samples.npy", samples)
    spec = _spec(tmp_path / "s.json", "fid", mode="clean", batch_size=8, heldout=True)
    args = ["--spec", spec, "--samples", str(tmp_path / "samples.npy"), "--ref", str(tmp_path / "train.npz"),
            "--out", str(tmp_path / "fid.json"), "--device", "cpu"]
    with pytest.raises(SpecError, match="heldout: True but --heldout-ref is missing"):
        fid_stage.main(args)
    fid_stage.main(args + ["--heldout-ref", str(tmp_path / "held.npz")])
    out = json.loads((tmp_path / "fid.json").read_text())
    for key, ref in (("fid", "train"), ("fid_heldout", "held")):
        alone = fid.fid_from_arrays(samples, tmp_path / f"{ref}.npz", progress=False)
        assert out[key] == pytest.approx(alone, rel=1e-9), key
    assert out["heldout_ref_count"] == 5 and abs(out["fid"] - out["fid_heldout"]) > 1e-3
