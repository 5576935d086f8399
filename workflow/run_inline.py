"""Run a profile's jobs in one Python process, in dependency order, without an orchestrator.

    python -m workflow.run_inline --profile small [--stages prepare,train] [--force]

The same plan and the same stage commands as the Snakefile and dvc.yaml, for machines where neither
is installed or where per-job process start-up (CUDA initialisation, imports) would dominate short
jobs. A job is skipped when all its outputs exist and are newer than its inputs (make's rule); a
killed run picks up where it stopped (training resumes from its checkpoints). Snakemake remains the
way to run in parallel, on clusters, and with full change tracking.
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from pathlib import Path

from diffrepro.pipeline.grid import STAGES, plan
from diffrepro.pipeline.params import load_params


def _mtime(path: Path) -> float:
    if path.is_dir():
        return max([p.stat().st_mtime for p in path.rglob("*") if p.is_file()] or [path.stat().st_mtime])
    return path.stat().st_mtime


def up_to_date(job) -> bool:
    outs = [Path(o) for o in job.outs]
    if not all(o.exists() for o in outs):
        return False
    deps = [Path(d) for d in job.deps]
    if not all(d.exists() for d in deps):
        return False
    return not deps or min(_mtime(o) for o in outs) >= max(_mtime(d) for d in deps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="default: the profile named in params.yaml")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of stages, in plan order")
    ap.add_argument("--force", action="store_true", help="rerun jobs whose outputs are up to date")
    args = ap.parse_args(argv)

    pl = plan(load_params(args.params), args.profile, args.params)
    wanted = [s for s in STAGES if s in set(args.stages.split(","))]
    jobs = [j for s in wanted for j in pl[s].values()]
    # Jobs come in dependency order; freshness is decided when a job's turn comes, after its inputs ran.
    print(f"profile {pl.profile}: {len(jobs)} jobs", file=sys.stderr)
    ran = 0
    for i, job in enumerate(jobs, 1):
        if not args.force and up_to_date(job):
            continue
        ran += 1
        print(f"[{i}/{len(jobs)}] {job.command}", file=sys.stderr, flush=True)
        t0 = time.time()
        if job.processes > 1:   # data-parallel training needs its own processes
            subprocess.run([sys.executable, "-m", *job.module.split(), *job.args, *_quiet(job.stage)], check=True)
        else:
            importlib.import_module(f"stages.{job.stage}").main(list(job.args) + _quiet(job.stage))
        print(f"    done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    print(f"ran {ran} jobs", file=sys.stderr)


def _quiet(stage):
    return ["--no-progress"] if stage in ("train", "sample", "fid", "fidref") else []


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    main()
