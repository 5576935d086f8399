"""Cluster execution: the SLURM profile is accepted by Snakemake with the SLURM executor plugin, a dry run
lists every planned job with its command, and jobs ask for the resources that become sbatch options
(GPUs, memory, time, CPUs)."""
import re

import pytest
import yaml

from diffrepro.pipeline.params import load_params
from diffrepro.pipeline.plan import plan
from pipeline_helpers import REPO, edit_params, make_project, snakemake

PROFILE = "workflow/profiles/slurm"


def _dry_run_jobs(text):
    """{(rule, key): shell command} from a dry run with --printshellcmds."""
    jobs = {}
    for m in re.finditer(r"^Job \d+: (\w+) (\S+)\n(?:Reason: .*\n)?Shell command: (.*)$", text, re.M):
        jobs[(m.group(1), m.group(2))] = m.group(3)
    return jobs


def test_slurm_profile_is_valid_yaml_with_the_executor():
    cfg = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())
    assert cfg["executor"] == "slurm" and cfg["rerun-incomplete"] is True
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(cfg["default-resources"])
    for rule in ("train", "sample", "fid", "fidref", "memorize", "gap", "memtrace", "trajectory"):
        assert cfg["set-resources"][rule]["slurm_partition"] == "gpu", rule


def test_gpu_jobs_ask_for_their_gpus_memory_time_and_cpus():
    params = load_params(REPO / "params.yaml")
    pl = plan(params, "small")
    for job in pl["train"].values():
        assert job.resources == {"gpu": 1, "mem_mb": 16000, "runtime": 1440, "threads": 2}
    assert pl["aggregate"]["small"].resources["gpu"] == 0
    params["profiles"]["small"]["train_processes"] = 4
    for job in plan(params, "small")["train"].values():
        assert job.resources == {"gpu": 4, "mem_mb": 64000, "runtime": 1440, "threads": 8}
        assert job.command.startswith("python -m torch.distributed.run --standalone --nproc_per_node 4 -m stages.train")
    for job in plan(params, "smoke")["train"].values():      # CPU profile: one thread a job, no GPU
        assert job.resources["gpu"] == 0 and job.resources["threads"] == 1


def test_rules_pass_the_planned_resources_to_the_executor():
    text = (REPO / "workflow/rules/stages.smk").read_text()
    for line in ('cpus_per_task=job_resource(stage, "threads", 1)', 'gpu=job_resource(stage, "gpu")',
                 'mem_mb=job_resource(stage, "mem_mb", 4000)', 'runtime=job_resource(stage, "runtime", 30)'):
        assert line in text


@pytest.mark.integration
def test_slurm_dry_run_lists_every_job_with_its_command(tmp_path):
    project = make_project(tmp_path / "p")
    res = snakemake(project, "--profile", PROFILE, "--config", "profile=small", "--dry-run", "--printshellcmds")
    jobs = _dry_run_jobs(res.stdout + res.stderr)
    planned = plan(load_params(project / "params.yaml"), "small")
    assert {k for (rule, k) in jobs if rule == "train"} == set(planned["train"]) and len(planned["train"]) >= 13
    for (rule, key), shell in jobs.items():
        if rule == "train":
            assert shell.startswith("OMP_NUM_THREADS=2 ") and " -m stages.train --spec results/specs/train/" in shell
    assert {r for r, _ in jobs} >= {"prepare", "fidref", "train", "sample", "fid", "memorize", "gap", "memtrace",
                                    "trajectory", "aggregate", "report"}
    edit_params(project / "params.yaml", lambda p: p["profiles"]["small"].update(train_processes=4))
    res = snakemake(project, "--profile", PROFILE, "--config", "profile=small", "--dry-run", "--printshellcmds")
    for (rule, _), shell in _dry_run_jobs(res.stdout + res.stderr).items():
        if rule == "train":
            assert "-m torch.distributed.run --standalone --nproc_per_node 4 -m stages.train" in shell
            assert shell.startswith("OMP_NUM_THREADS=2 ")
