"""Prepare one dataset subset: a seeded training subset and a disjoint held-out split, stored as
compact arrays plus a manifest with checksums.

    python -m stages.prepare --dataset <dataset-key> --out results/data/<dataset-key>

Fashion-MNIST is read from a user folder (datasets.<name>.source), Debian's dataset-fashion-mnist
package, or downloaded when allowed; CIFAR-10 from an archive or downloaded and verified.
"""
from __future__ import annotations

from stages._common import add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--dataset", required=True, help="dataset key (from the workflow plan)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cache-dir", default=None, help="where downloads go (default: ~/.cache/diffrepro)")
    args = p.parse_args(argv)

    from diffrepro.data import write_dataset
    from diffrepro.data.prepare import prepare_from_spec
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    spec = find_job(load_params(args.params), "prepare", args.dataset, args.params).spec
    ds = prepare_from_spec(spec, cache_dir=args.cache_dir)
    write_dataset(args.out, ds)
    log.info("%s: %d training and %d held-out examples of shape %s -> %s", args.dataset, len(ds.train),
             len(ds.heldout), tuple(ds.train.shape[1:]), args.out)


if __name__ == "__main__":
    main_guard(main)
