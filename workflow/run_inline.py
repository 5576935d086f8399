"""Run a profile's jobs in one Python process, in dependency order, without an orchestrator.

    python -m workflow.run_inline --profile small [--stages prepare,train] [--match REGEX] [--force] [--jobs N]

The same plan and the same stage commands as the Snakefile and dvc.yaml, for machines where neither
is installed or where per-job process start-up (CUDA initialisation, imports) would dominate short
jobs. A job is skipped when all its outputs exist and are newer than its inputs (make's rule); a
killed run picks up where it stopped (training resumes from its checkpoints).

--jobs N runs up to N jobs at once, each in its own process with its output in the job's log file,
starting a job as soon as the jobs that make its inputs have finished. Small networks leave most of
a GPU idle, so several of their training runs can share one. After a failure no new job starts; the
running ones finish and the log of the failed one is shown. Snakemake remains the way to run on
clusters and with full change tracking.
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Set

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
    ap.add_argument("--match", default=None, metavar="REGEX",
                    help="only jobs whose key matches this regular expression (e.g. 'mem-' for one training setting)")
    ap.add_argument("--jobs", type=int, default=1, help="jobs to run at once, each in its own process (default 1)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")

    pl = plan(load_params(args.params), args.profile, args.params)
    wanted = [s for s in STAGES if s in set(args.stages.split(","))]
    jobs = [j for s in wanted for j in pl[s].values()]
    if args.match:
        jobs = [j for j in jobs if re.search(args.match, j.key)]
    # Jobs come in dependency order; freshness is decided when a job's turn comes, after its inputs ran.
    print(f"profile {pl.profile}: {len(jobs)} jobs", file=sys.stderr)
    if args.jobs > 1:
        failed = run_parallel(jobs, args.jobs, args.force)
        if failed:
            raise SystemExit(f"{len(failed)} job(s) failed: " + ", ".join(f"{j.stage} {j.key}" for j in failed))
        return
    ran = 0
    for i, job in enumerate(jobs, 1):
        if not args.force and up_to_date(job):
            continue
        ran += 1
        print(f"[{i}/{len(jobs)}] {job.command}", file=sys.stderr, flush=True)
        t0 = time.time()
        if job.processes > 1:   # data-parallel training needs its own processes
            subprocess.run(_argv(job), check=True)
        else:
            importlib.import_module(f"stages.{job.stage}").main(list(job.args) + _quiet(job.stage))
        print(f"    done in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    print(f"ran {ran} jobs", file=sys.stderr)


def producers(jobs) -> List[Set[int]]:
    """For each job, the indices of the earlier jobs that write one of its inputs (or a folder holding one)."""
    exact, inside = {}, {}          # output path -> job; folder -> jobs writing something under it
    for j, job in enumerate(jobs):
        for o in job.outs:
            o = Path(o)
            exact.setdefault(o, set()).add(j)
            for parent in o.parents:
                inside.setdefault(parent, set()).add(j)
    out = []
    for i, job in enumerate(jobs):
        found = set()
        for d in map(Path, job.deps):
            for p in (d, *d.parents):
                found |= exact.get(p, set())
            found |= inside.get(d, set())
        out.append({j for j in found if j < i})
    return out


def run_parallel(jobs, n: int, force: bool = False, poll_s: float = 0.2) -> list:
    """Run `jobs` (in dependency order) with at most `n` at once; returns the jobs that failed."""
    needs = producers(jobs)
    pending, running, done, failed = list(range(len(jobs))), {}, set(), []
    skipped = ran = 0
    try:
        while pending or running:
            for i in list(pending):
                if failed or len(running) >= n:
                    break
                if not needs[i] <= done:
                    continue
                pending.remove(i)
                job = jobs[i]
                if not force and up_to_date(job):
                    done.add(i)
                    skipped += 1
                    continue
                log = Path(job.log or f"results/logs/{job.stage}/{job.key}.log")
                log.parent.mkdir(parents=True, exist_ok=True)
                fh = open(log, "w")
                print(f"[{i + 1}/{len(jobs)}] start {job.command}  (log {log})", file=sys.stderr, flush=True)
                running[i] = (subprocess.Popen(_argv(job), stdout=fh, stderr=subprocess.STDOUT), fh, log, time.time())
            if failed and not running:
                break
            if not running:
                if pending:   # nothing runs and nothing can start: an input no planned job makes
                    raise RuntimeError(f"cannot order jobs: {jobs[pending[0]].stage} {jobs[pending[0]].key} waits "
                                       "for jobs that never finish")
                break
            time.sleep(poll_s)
            for i, (proc, fh, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                del running[i]
                ran += 1
                if proc.returncode == 0:
                    done.add(i)
                    print(f"[{i + 1}/{len(jobs)}] done in {time.time() - t0:.1f} s: {jobs[i].stage} {jobs[i].key}",
                          file=sys.stderr, flush=True)
                else:
                    failed.append(jobs[i])
                    tail = "".join(log.read_text(errors="replace").splitlines(True)[-30:])
                    print(f"[{i + 1}/{len(jobs)}] FAILED (exit {proc.returncode}): {jobs[i].command}\n"
                          f"--- last lines of {log} ---\n{tail}", file=sys.stderr, flush=True)
    finally:
        for proc, fh, _, _ in running.values():   # interrupted: stop the children, keep their partial logs
            proc.terminate()
            proc.wait()
            fh.close()
    print(f"ran {ran} jobs, {skipped} up to date, {len(failed)} failed", file=sys.stderr)
    return failed


def _argv(job) -> list:
    """The job's command for a process of its own (no progress bars: its output goes to a log)."""
    return [sys.executable, "-m", *job.module.split(), *job.args, *_quiet(job.stage)]


def _quiet(stage):
    return ["--no-progress"] if stage in ("train", "sample", "fid", "fidref") else []


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    main()
