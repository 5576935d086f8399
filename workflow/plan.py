"""Plan a profile of params.yaml and write its jobs' spec files (results/specs/<stage>/<key>.json): DVC's
`plan` stage, and a way to look at a plan without running anything.

    python -m workflow.plan [--profile small] [--check-dvc dvc.yaml] [--list]

A spec file is rewritten only when its content changes. With --check-dvc, the plan must have exactly the
stages dvc.yaml was generated with; when a parameter change adds or removes jobs (another profile, new
sizes, methods or seeds), it stops and says to regenerate dvc.yaml.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffrepro.cli import UserError, main_guard


class DvcOutOfDate(UserError):
    """dvc.yaml was generated for another set of jobs."""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None, help="default: the profile named in params.yaml")
    ap.add_argument("--check-dvc", default=None, metavar="DVC_YAML",
                    help="stop if this dvc.yaml does not describe the planned jobs")
    ap.add_argument("--list", action="store_true", help="print each job's command instead of writing specs")
    args = ap.parse_args(argv)

    from diffrepro.pipeline.params import load_params
    from diffrepro.pipeline.plan import plan, write_specs

    params = load_params(args.params)
    pl = plan(params, args.profile)
    if args.list:
        for job in pl.all_jobs():
            print(job.command)
        return
    if args.check_dvc:
        from workflow.make_dvc import render

        expected = render(args.params, args.profile)
        have = Path(args.check_dvc).read_text() if Path(args.check_dvc).exists() else ""
        if have != expected:
            raise DvcOutOfDate(
                f"{args.check_dvc} does not describe the jobs of profile {pl.profile!r} as params.yaml now defines "
                f"them (the change adds or removes jobs, or their inputs or code changed). Regenerate it: "
                f"`python -m workflow.make_dvc{' --profile ' + args.profile if args.profile else ''}`, "
                f"then run `dvc repro` (or `dvc exp run`) again.")
    written = write_specs(pl)
    print(f"profile {pl.profile}: {len(pl.all_jobs())} jobs, {len(written)} spec file(s) changed", file=sys.stderr)


if __name__ == "__main__":
    main_guard(main)
