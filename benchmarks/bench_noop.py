"""Pipeline overhead: how long Snakemake takes to decide that a finished grid has nothing to do.

    python benchmarks/bench_noop.py --profile small [--repeats 5] [--out results.json]

Copies the project into a temporary folder, creates every output of the profile's plan (placeholder
files, written in dependency order so each is newer than its inputs), records them as produced by
the current rules with one `snakemake --touch` pass, then times full `snakemake` invocations that
find nothing to do (process start, reading params.yaml, planning the grid, building the DAG, checking
every file, its spec and its code, and its recorded parameters). CPU only; no GPU or data needed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks._util import write_result  # noqa: E402
from diffrepro.pipeline.params import load_params  # noqa: E402
from diffrepro.pipeline.plan import STAGES, is_directory, plan, write_specs  # noqa: E402

PROJECT_FILES = ["Snakefile", "params.yaml", "workflow", "stages", "diffrepro"]


def _materialize(project: Path, profile: str) -> int:
    pl = plan(load_params(project / "params.yaml"), profile)
    write_specs(pl, project)
    n = 0
    t = time.time() - 3600
    for stage in STAGES:
        for job in pl[stage].values():
            t += 1
            for out in job.outputs.values():
                path = project / out
                is_dir = is_directory(out)
                (path if is_dir else path.parent).mkdir(parents=True, exist_ok=True)
                if not is_dir:
                    path.write_bytes(b"")
                os.utime(path, (t, t))
                n += 1
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="small")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="append the result to this JSON file")
    args = ap.parse_args(argv)

    snakemake = Path(sys.executable).parent / "snakemake"
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for name in PROJECT_FILES:
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, project / name)
        n_outputs = _materialize(project, args.profile)
        cmd = [str(snakemake), "--cores", "1", "--config", f"profile={args.profile}"]
        subprocess.run(cmd + ["--touch", "--quiet", "all"], cwd=project, check=True, capture_output=True)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            text = res.stdout + res.stderr
            if res.returncode or "Nothing to be done" not in text:
                raise SystemExit(f"expected a no-op run, got:\n{text[-3000:]}")
    result = {"profile": args.profile, "outputs": n_outputs, "repeats": args.repeats,
              "seconds_median": round(statistics.median(times), 3), "seconds_all": [round(x, 3) for x in times],
              "cpus": os.cpu_count()}
    if args.out:
        write_result(args.out, f"noop-rerun-{args.profile}", result)
    else:
        print(result)


if __name__ == "__main__":
    main()
