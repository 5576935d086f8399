"""Collect the measurements of a profile into one tidy Parquet table (one row per run x evaluation x
metric x step, with provenance columns; diffrepro.results), and per-run loss and FID curves as CSV.

    python -m stages.aggregate --spec results/specs/aggregate/smoke.json --out reports/smoke/metrics.parquet \
        --curves reports/smoke/curves

spec: the manifest of the profile's runs, evaluations and analyses with the paths of their outputs, as the
planner writes it (see diffrepro.results.collect).
"""
from __future__ import annotations

from pathlib import Path

from diffrepro.cli import load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="Parquet file")
    p.add_argument("--curves", default=None, help="folder for loss/<run>.csv and fid/<run>.csv")
    p.add_argument("--allow-missing", action="store_true",
                   help="skip outputs that do not exist (a partial grid); they are listed in the log")
    args = p.parse_args(argv)

    from diffrepro.io import atomic_write_parquet, replace_folder
    from diffrepro.results import collect, curves

    manifest = load_spec(args.spec, "aggregate", ["runs", "evals"])
    df, skipped = collect(manifest, allow_missing=args.allow_missing)
    if args.curves:
        with replace_folder(args.curves) as tmp:
            for kind, per_run in curves(df).items():
                (Path(tmp) / kind).mkdir(parents=True)
                for run, frame in per_run.items():
                    frame.to_csv(Path(tmp) / kind / f"{run}.csv", index=False)
    atomic_write_parquet(args.out, df)
    log.info("%d rows from %d runs and %d evaluations -> %s", len(df), len(manifest["runs"]), len(manifest["evals"]),
             args.out)
    if skipped:
        log.warning("skipped %d missing outputs, e.g. %s", len(skipped), skipped[0])


if __name__ == "__main__":
    main_guard(main)
