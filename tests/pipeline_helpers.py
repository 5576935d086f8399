"""Helpers for the end-to-end tests: a throw-away copy of the project, and real Snakemake / DVC calls."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "params.yaml", "dvc.yaml", "workflow"]


def env():
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("OMP_NUM_THREADS", "2")
    return e


def make_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    return dest


def run(cmd, cwd, check=True, timeout=1800):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def snakemake(cwd, *args, check=True):
    return run([BIN / "snakemake", "--cores", "2", *args], cwd, check)


def snakemake_job_counts(cwd, *args) -> dict:
    """{rule: count} of the jobs a dry run would execute (empty when there is nothing to do)."""
    res = snakemake(cwd, "--dry-run", *args)
    text = res.stdout + res.stderr
    counts = {}
    if "Job stats:" not in text:
        assert "Nothing to be done" in text, text[-3000:]
        return counts
    block = text.split("Job stats:", 1)[1]
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    counts.pop("all", None)
    return counts


def snakemake_jobs(cwd, *args) -> set:
    """(rule, key) of every job of a forced dry run."""
    res = snakemake(cwd, "--dry-run", "--forceall", *args)
    text = res.stdout + res.stderr
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not m or m.group(1) == "all":
            continue
        w = re.search(r"wildcards: key=(\S+)", block)
        jobs.add((m.group(1), w.group(1) if w else None))
    return jobs


def dvc(cwd, *args, check=True):
    return run([BIN / "dvc", *args], cwd, check)


def dvc_init(cwd):
    run(["git", "init", "-q"], cwd)
    dvc(cwd, "init", "-q")
    dvc(cwd, "config", "core.analytics", "false")


def dvc_stages_to_run(cwd) -> list:
    """Stages `dvc repro` would run: those `dvc status` reports as changed (a dry repro cannot get past
    stages whose inputs do not exist yet)."""
    import json
    res = dvc(cwd, "status", "--json")
    return sorted(json.loads(res.stdout or "{}"))


def dvc_jobs(cwd) -> set:
    """(stage, key) of every stage in dvc.yaml: `train-fmnist@<key>` -> ('train', key)."""
    res = dvc(cwd, "stage", "list", "--name-only")
    jobs = set()
    for name in res.stdout.split():
        group, _, key = name.partition("@")
        jobs.add((group.split("-", 1)[0], key))
    return jobs


def edit_params(path: Path, fn):
    params = yaml.safe_load(path.read_text())
    fn(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def regenerate_dvc(cwd):
    run([sys.executable, "-m", "workflow.make_dvc"], cwd)
