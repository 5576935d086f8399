"""Write the report of a profile from its metrics table: Markdown + HTML, figures, claims table.

    python -m stages.report --profile smoke --metrics reports/smoke/metrics.parquet --out reports/smoke

Reads only the metrics table and the evaluation folders' images, so committed results regenerate
the report without retraining.
"""
from __future__ import annotations

from stages._common import add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--profile", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--out", required=True, help="report folder")
    args = p.parse_args(argv)

    import pandas as pd

    from diffrepro.report.build import build_report

    df = pd.read_parquet(args.metrics)
    summary = build_report(df, args.profile, args.out)
    log.info("report for %s: %d claims filled -> %s", args.profile, summary["claims_filled"], args.out)


if __name__ == "__main__":
    main_guard(main)
