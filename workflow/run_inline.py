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
    deps = [Path(d) for d in job.deps if Path(d).exists()]
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
    todo = [j for s in wanted for j in pl[s].values() if args.force or not up_to_date(j)]
    print(f"profile {pl.profile}: {len(todo)} of {sum(len(pl[s]) for s in wanted)} jobs to run", file=sys.stderr)
    for i, job in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {job.command}", file=sys.stderr, flush=True)
        t0 = time.time()
        importlib.import_module(f"stages.{job.stage}").main(list(job.args) + _quiet(job.stage))
        print(f"    done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)


def _quiet(stage):
    return ["--no-progress"] if stage in ("train", "sample", "fid", "fidref") else []


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    main()
