"""Cluster execution: the SLURM profile is accepted by Snakemake with the SLURM executor plugin, and a
dry run lists every job with the resources that become sbatch options (GPUs, memory, time, partition)."""
import re

import pytest
import yaml

from diffrepro.pipeline.grid import plan
from diffrepro.pipeline.params import load_params
from pipeline_helpers import REPO, edit_params, make_project, snakemake

PROFILE = "workflow/profiles/slurm"


def _jobs_with_resources(text):
    """{(rule, key): {resource: value}} from a dry run's job listing."""
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        r = re.search(r"resources: (.*)", block)
        if not m or not r or m.group(1) == "all":
            continue
        w = re.search(r"wildcards: key=(\S+)", block)
        res = dict(kv.split("=", 1) for kv in r.group(1).split(", "))
        shell = re.search(r"(?:Shell command: |\n\s+)(OMP_NUM_THREADS=.*)", block)
        jobs[(m.group(1), w.group(1) if w else None)] = {**res, "_shell": shell.group(1) if shell else ""}
    return jobs


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("slurm"))


def test_slurm_profile_is_valid_yaml_with_the_executor():
    cfg = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())
    assert cfg["executor"] == "slurm"
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(cfg["default-resources"])
    for rule in ("train", "sample", "fid", "fidref", "memorize", "gap", "memtrace", "trajectory"):
        assert cfg["set-resources"][rule]["slurm_partition"] == "gpu", rule


def test_slurm_dry_run_lists_jobs_with_their_resources(project):
    res = snakemake(project, "--profile", PROFILE, "--config", "profile=small", "--dry-run", "--printshellcmds")
    jobs = _jobs_with_resources(res.stdout + res.stderr)
    trains = {k: v for k, v in jobs.items() if k[0] == "train"}
    planned = plan(load_params(project / "params.yaml"), "small", "params.yaml")["train"]
    assert {k for _, k in trains} == set(planned) and len(trains) >= 13   # every planned run, none twice
    for r in trains.values():
        assert r["gpu"] == "1" and r["slurm_partition"] == "gpu" and r["mem_mb"] == "16000" and r["runtime"] == "1440"
        assert r["cpus_per_task"] == "2"
        assert "-m stages.train" in r["_shell"] and "torch.distributed.run" not in r["_shell"]
    agg = jobs[("aggregate", "small")]
    assert agg["slurm_partition"] == "cpu" and "gpu" not in agg
    assert {k[0] for k in jobs} >= {"prepare", "fidref", "train", "sample", "fid", "memorize", "gap", "memtrace",
                                    "trajectory", "aggregate", "report"}


def test_multi_gpu_training_jobs_ask_slurm_for_all_their_gpus(project):
    edit_params(project / "params.yaml", lambda p: p["profiles"]["small"].update(train_processes=4))
    res = snakemake(project, "--profile", PROFILE, "--config", "profile=small", "--dry-run", "--printshellcmds")
    jobs = _jobs_with_resources(res.stdout + res.stderr)
    for (rule, _), r in jobs.items():
        if rule == "train":
            assert r["gpu"] == "4" and r["mem_mb"] == "64000" and r["cpus_per_task"] == "8"
            assert "torch.distributed.run --standalone --nproc_per_node 4 -m stages.train" in r["_shell"]
            assert r["_shell"].startswith("OMP_NUM_THREADS=2 ")
        elif rule in ("sample", "fid"):
            assert r["gpu"] == "1"
