"""Helpers for the end-to-end tests: a throw-away copy of the project (code included: code is a dependency),
and real Snakemake / DVC calls."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "params.yaml", "dvc.yaml", "pyproject.toml", "README.md", "workflow", "diffrepro",
                 "stages", ".dvc", ".dvcignore", ".gitignore"]


def env(project: Path | None = None):
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.setdefault("OMP_NUM_THREADS", "2")
    e.pop("PYTHONPATH", None)
    if project is not None:          # the project's own code, not the repository's
        e["PYTHONPATH"] = str(project)
    return e


def make_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "tests").mkdir(exist_ok=True)
    (dest / "tests" / "test_example.py").write_text("def test_nothing():\n    pass\n")
    return dest


def run(cmd, cwd, check=True, timeout=1800, extra_env=None):
    e = env(Path(cwd))
    e.update(extra_env or {})
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
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
    return {(m.group(1), m.group(2)) for m in re.finditer(r"^Job \d+: (\w+) (\S+)$", text, re.M)}


def dvc(cwd, *args, check=True, timeout=1800):
    return run([BIN / "dvc", *args], cwd, check, timeout=timeout)


def git(cwd, *args, check=True):
    return run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd, check)


def git_init(cwd):
    git(cwd, "init", "-q")
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", "project")


def dvc_changed(cwd) -> list:
    """Stages `dvc status` reports as changed (what `dvc repro` would run first)."""
    res = dvc(cwd, "status", "--json")
    return sorted(json.loads(res.stdout or "{}"))


def dvc_jobs(cwd) -> set:
    """(stage, key) of every stage in dvc.yaml: `train@<key>` -> ('train', key), `report` -> ('report', profile)."""
    res = dvc(cwd, "stage", "list", "--name-only")
    jobs = set()
    for name in res.stdout.split():
        group, _, key = name.partition("@")
        jobs.add((group.split("-")[0], key or None))
    return jobs


def stage_counts(names) -> dict:
    counts = {}
    for name in names:
        stage = name.split("@")[0].split("-")[0]
        counts[stage] = counts.get(stage, 0) + 1
    return counts


def edit_params(path: Path, fn):
    params = yaml.safe_load(path.read_text())
    fn(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
