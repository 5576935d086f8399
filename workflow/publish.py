"""Copy a profile's results into a folder you commit, so its report regenerates without the runs.

    python -m workflow.publish --profile claims [--to reports/claims] [--params params.yaml]

Copies every output the profile's aggregate stage reads (training metrics, sample info, FID, RMSE and
memorization summaries, analysis tables) and every figure its report shows, from results/ to
<to>/results/ in the same layout, and writes <to>/specs/aggregate.json and report.json: the planner's
specs with the copied paths. Outputs not made yet (a campaign in progress) are counted and skipped; run it
again after more runs finish. Checkpoints, snapshots and samples are never copied. Then

    python -m stages.aggregate --spec <to>/specs/aggregate.json --out <to>/metrics.parquet --allow-missing
    python -m stages.report --spec <to>/specs/report.json --metrics <to>/metrics.parquet --out <to>
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from diffrepro.io import atomic_write_json
from diffrepro.pipeline.params import ParamsError, load_params
from diffrepro.pipeline.plan import plan


def _rebase(obj, to: str, found: list, missing: list):
    """obj with every 'results/...' path string under `to`, each path sorted into found / missing."""
    if isinstance(obj, dict):
        return {k: _rebase(v, to, found, missing) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, to, found, missing) for v in obj]
    if isinstance(obj, str) and obj.startswith("results/") and Path(obj).suffix:
        (found if Path(obj).is_file() else missing).append(obj)
        return f"{to}/{obj}"
    return obj


def publish(params: dict, profile: str, to: str) -> dict:
    """Copy the profile's existing results under `to` and write its specs there; returns counts."""
    pl = plan(params, profile)
    found, missing = [], []
    specs = {}
    for stage in ("aggregate", "report"):
        spec = dict(pl[stage][profile].spec)
        specs[stage] = _rebase({k: v for k, v in spec.items() if k not in ("format", "key")}, to, found, missing)
    for path in sorted(set(found)):
        dest = Path(to) / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    for stage, spec in specs.items():
        atomic_write_json(Path(to) / "specs" / f"{stage}.json", spec)
    return {"copied": len(set(found)), "missing": len(set(missing))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--to", default=None, help="default: reports/<profile>")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        counts = publish(params, args.profile, args.to or f"reports/{args.profile}")
    except ParamsError as exc:
        sys.exit(f"error: {exc}")
    print(f"{counts['copied']} result files copied to {args.to or f'reports/{args.profile}'}/results; "
          f"{counts['missing']} not made yet")


if __name__ == "__main__":
    main()
