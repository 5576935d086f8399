"""Reports name the FID mode beside every FID: a hand-made metrics table in the papers' mode
(legacy_tensorflow) and one with both modes, which are never pooled."""
import numpy as np
import pandas as pd

from diffrepro.report.build import build_report, fid_table
from diffrepro.report.figures import fid_label


def _fid_rows(mode, values, eval_prefix="cifar10-n50000_edm_ddpmpp-cifar", sampling="heun-18"):
    return pd.DataFrame([{"run": f"{eval_prefix}_s{s}", "eval": f"{eval_prefix}_s{s}__{sampling}", "metric": "fid",
                          "value": v, "dataset": "cifar10", "n_train": 50000, "method": "edm", "precond": "edm",
                          "sigma_dist": "lognormal", "target": None, "mask_ratio": 0.0,
                          "training": "ddpmpp-cifar", "seed": s, "sampling": sampling, "nfe": 35,
                          "num_samples": 50000, "fid_ref_count": np.nan, "fid_mode": mode, "step": np.nan}
                         for s, v in enumerate(values)])


def _fid_section(text):
    return text.split("## FID", 1)[1].split("\n## ", 1)[0]


def test_legacy_mode_is_named_beside_the_fid(tmp_path):
    df = _fid_rows("legacy_tensorflow", [2.01, 1.99, 2.03])
    t = fid_table(df)
    assert len(t) == 1 and t.loc[0, "FID mode"] == "legacy_tensorflow" and t.loc[0, "samples"] == 50000
    assert t.loc[0, "FID"] == "2.01 [1.96, 2.06] (n=3)"          # seed mean, t interval with 2 degrees of freedom
    assert t.loc[0, "reference images"] == "whole training split"
    summary = build_report(df, "paper", tmp_path)
    section = _fid_section((tmp_path / "report.md").read_text())
    row = next(line for line in section.splitlines() if "ddpmpp-cifar" in line)
    assert "legacy_tensorflow" in row and "2.01" in row
    assert "clean" not in section
    assert set(summary["fid_mode"].values()) == {"legacy_tensorflow"}
    assert fid_label(df) == "FID, legacy_tensorflow (50000 samples)"


def test_two_modes_are_two_rows_and_rows_without_a_mode_are_clean():
    df = pd.concat([_fid_rows("legacy_tensorflow", [2.0, 2.2]), _fid_rows("clean", [3.0, 3.4])], ignore_index=True)
    t = fid_table(df).set_index("FID mode")["FID"]
    assert t.to_dict() == {"legacy_tensorflow": "2.1 [0.8294, 3.371] (n=2)", "clean": "3.2 [0.6588, 5.741] (n=2)"}
    # a table written before FID had modes: its FIDs were clean, and pool with clean ones
    df.loc[df["fid_mode"] == "clean", "fid_mode"] = np.nan
    assert fid_table(df.drop(columns="fid_mode"))["FID mode"].tolist() == ["clean"]
    assert fid_table(df).set_index("FID mode")["FID"].to_dict()["clean"] == "3.2 [0.6588, 5.741] (n=2)"
    assert fid_label(df) == "FID, clean / legacy_tensorflow (50000 samples)"
