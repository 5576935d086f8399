"""Loss curves of the fast training path against full fp32, from a results file written by
`bench_train.py curve` (the fast run and two fp32 runs with different seeds, for the noise level).

    python benchmarks/plot_curves.py --results benchmarks/results/h100.json --preset medium --batch 512
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def relative_gap(a, b, last: int = 10) -> float:
    """Mean |a - b| / b over the last `last` logged windows."""
    pairs = list(zip(a[-last:], b[-last:]))
    return sum(abs(x - y) / y for x, y in pairs) / len(pairs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="benchmarks/results/h100.json")
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--out", default=None, help="figure path (default: beside the results file)")
    args = ap.parse_args()
    data = json.loads(Path(args.results).read_text())
    runs = {k: v for k, v in data.items() if k.startswith(f"curve-{args.preset}-b{args.batch}-")}
    if not runs:
        raise SystemExit(f"no curve-{args.preset}-b{args.batch}-* entries in {args.results}")
    loss = {k.split(f"-b{args.batch}-")[1]: [row[1] for row in v["loss"]] for k, v in runs.items()}
    steps = [row[0] for row in next(iter(runs.values()))["loss"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in sorted(loss.items()):
        ax.plot(steps, ys, label=name, lw=1.4, ls="-" if name.startswith("fast") else "--")
    ax.set(yscale="log", xlabel="training step", ylabel="training loss (mean over 10 steps)",
           title=f"{args.preset} U-Net, batch {args.batch}: fast path vs fp32")
    notes = []
    if "fast-s0" in loss and "fp32-s0" in loss:
        notes.append(f"fast vs fp32 (seed 0): {relative_gap(loss['fast-s0'], loss['fp32-s0']):.2%}")
    if "fp32-s1" in loss and "fp32-s0" in loss:
        notes.append(f"fp32 seed 1 vs seed 0: {relative_gap(loss['fp32-s1'], loss['fp32-s0']):.2%}")
    if notes:
        ax.text(0.98, 0.95, "mean relative gap, last 10 windows\n" + "\n".join(notes), transform=ax.transAxes,
                ha="right", va="top", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out = Path(args.out or Path(args.results).with_name(f"loss-curves-{args.preset}-b{args.batch}.png"))
    fig.savefig(out, dpi=120)
    print(out, *notes, sep="\n")


if __name__ == "__main__":
    main()
