"""The `claims` profile end to end through Snakemake, in miniature on CPU: the same experiments, arms,
training names and measurement keys as params.yaml plans them, with tiny networks, a few dozen steps, one
seed, fewer images and samples, a shorter sampler sweep. Catches wiring between the plan and the claims evaluators before GPU hours
are spent: every row of the claims table gets its measurement (none says "not run"). About 18 minutes on
2 cores; it found that an undertrained model's samples stopped the trajectory stage."""
import copy

import pandas as pd
import pytest
import yaml

from pipeline_helpers import make_project, snakemake

pytestmark = pytest.mark.integration

SIZES = {60000: 600, 100: 40, 300: 80, 1000: 160, 3000: 320}


def miniature_claims(params: dict) -> dict:
    p = copy.deepcopy(params)
    prof = p["profiles"]["claims"]
    prof.update(device="cpu", gpus_per_job=0, fid_reference={"fmnist": 100}, fid_heldout={"fmnist": 64},
                targetvar={"ref_batches": [32, 64, 128], "n_samples": 32},
                analysis={"sigmas": 6, "n_per_set": 32, "memtrace_samples": 16, "trajectory_samples": 8})
    for exp in prof["experiments"]:
        exp.update(sizes=[SIZES[n] for n in exp["sizes"]], seeds=[0], num_samples=32)
        if "analysis_steps" in exp:
            exp["analysis_steps"] = {"every": 0.5}
        if "analysis_samples" in exp:
            exp["analysis_samples"] = 16
        if "reference" in exp:          # E1's sweep: two step counts per sampler and the reference
            exp["sampling"] = ["heun-5", "heun-9", "euler-8", "euler-16", exp["reference"]]
    p["methods"]["stf-4096"]["target"]["ref_batch"] = 24           # |R|/N = 4% of 600, as 4096 of 60,000
    p["methods"]["infonoise"]["sigma_dist"].update(warmup_img=320, refresh_img=160)
    for name in ("claims-pilot", "claims-small", "claims-small-2T", "claims-medium"):
        t = p["training"][name]
        for gpu_only in ("precision", "fast", "compile_mode"):
            t.pop(gpu_only, None)
        steps = {"claims-pilot": 80, "claims-small-2T": 80}.get(name, 40)
        t.update(network="small" if name == "claims-medium" else "tiny", steps=steps, batch_size=16,
                 checkpoint_every=steps // 2, log_every=steps // 4, lr_warmup_img=0, ema_halflife_img=200)
    p["profile"] = "claims"
    return p


def test_the_claims_profile_fills_every_claim_row(tmp_path):
    project = make_project(tmp_path / "p")
    params = miniature_claims(yaml.safe_load((project / "params.yaml").read_text()))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake(project, "--config", "profile=claims")
    from diffrepro.report.claims import claims_table

    metrics = pd.read_parquet(project / "reports/claims/metrics.parquet")
    table = claims_table(metrics).set_index("id")
    assert (table["verdict"] != "not run").all(), table.loc[table["verdict"] == "not run", "reason"].to_dict()
    assert {"rmse_to_reference", "fid_heldout", "fid_ckpt", "stf_target_trace", "gap", "traj_w_max_traj"} \
        <= set(metrics["metric"])
    report = (project / "reports/claims/report.md").read_text()
    assert "## What we found" in report and "pilot_curve.png" in report
