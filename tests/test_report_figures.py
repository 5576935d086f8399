"""Report figures on tables with several image datasets of one size (your own data beside another set)."""
import numpy as np
import pandas as pd

from diffrepro.report.figures import stf_target_variance


def test_stf_target_variance_with_two_datasets_of_one_size(tmp_path):
    rows = []
    for d, scale in (("pngs", 1.0), ("arr", 0.5)):
        for r in (64, 256):
            for s in (0.1, 1.0, 10.0):
                rows += [{"dataset": d, "n_train": 300, "ref_batch": r, "sigma": s, "metric": m, "value": v}
                         for m, v in (("stf_trace_ratio", scale * s / (1 + s)), ("stf_trace_ratio_se", 0.01))]
    df = pd.DataFrame(rows)
    assert stf_target_variance(df, tmp_path / "tv.png") and (tmp_path / "tv.png").stat().st_size > 0
    assert stf_target_variance(df[df.dataset == "arr"], tmp_path / "arr.png")
    assert not stf_target_variance(df.assign(ref_batch=np.ones(len(df))), tmp_path / "none.png")
