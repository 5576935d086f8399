"""Write the report of a profile from its metrics table: Markdown + HTML, figures, claims table.

    python -m stages.report --spec results/specs/report/smoke.json --metrics reports/smoke/metrics.parquet \
        --out reports/smoke

spec: {"profile": "smoke", "images": [{"kind": "samples", "path": "results/evals/<e>/grid.png",
       "caption": "..."}, ...]}  (images: figures the stages drew, copied next to the report)

Reads only the metrics table and the listed images, so committed tables regenerate the report without
retraining.
"""
from __future__ import annotations

from diffrepro.cli import load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--metrics", required=True, help="the profile's metrics.parquet (stages.aggregate)")
    p.add_argument("--out", required=True, help="report folder")
    args = p.parse_args(argv)

    import pandas as pd

    from diffrepro.report.build import build_report

    spec = load_spec(args.spec, "report", ["profile"])
    df = pd.read_parquet(args.metrics)
    summary = build_report(df, spec["profile"], args.out, images=spec.get("images", []))
    log.info("report for %s: %d claims filled -> %s/report.md", spec["profile"], summary["claims_filled"], args.out)


if __name__ == "__main__":
    main_guard(main)
