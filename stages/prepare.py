"""Prepare one dataset subset: a seeded training subset and a disjoint held-out split, stored as compact
arrays plus a manifest with checksums.

    python -m stages.prepare --spec results/specs/prepare/fmnist-n300.json --out results/data/fmnist-n300

spec: {"dataset": {"kind": "image", "name": "fashion_mnist", "resolution": 32, "n_train": 300,
       "n_heldout": 1000, "heldout_split": "test", "seed": 0}}  (a datasets.<entry> of params.yaml + n_train)

--source names where the raw files lie (a folder, archive or file; `auto`: Debian's dataset-fashion-mnist
package or the download cache), --heldout-source where held-out images of your own data lie (an entry's
`heldout_source`); neither is part of the spec, since a copy of the same files elsewhere is the same data
(the spec's `fingerprint` identifies the content).
"""
from __future__ import annotations

from diffrepro.cli import add_location, load_spec, location, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--out", required=True, help="output folder")
    add_location(p, "folder or archive of the raw dataset files (auto: standard places)")
    p.add_argument("--heldout-source", default=None, help="held-out images in the same format (your own data)")
    p.add_argument("--cache-dir", default=None, help="where downloads go (default: ~/.cache/diffrepro)")
    args = p.parse_args(argv)

    from diffrepro.data import write_dataset
    from diffrepro.data.prepare import prepare_from_spec

    spec = load_spec(args.spec, "prepare", ["dataset"])
    where = location(args)
    if args.heldout_source:
        where["heldout_source"] = args.heldout_source
    ds = prepare_from_spec({**spec["dataset"], **where}, cache_dir=args.cache_dir)
    # the folder records what the data is, not where it was read from (that goes to the log): the same
    # files elsewhere give the same folder, so nothing downstream reruns
    ds.manifest["spec"] = spec["dataset"]
    for part in ("source", "heldout_source"):
        if isinstance(ds.manifest.get(part), dict) and "description" in ds.manifest[part]:
            log.info("read %s", ds.manifest[part].pop("description"))
            ds.manifest[part].pop("files", None)       # your own data's file paths (its content is hashed)
    write_dataset(args.out, ds)
    name = spec["dataset"].get("entry") or spec["dataset"].get("name", "dataset")   # a hand-written spec has no entry
    log.info("%s: %d training and %d held-out examples of shape %s -> %s", name, len(ds.train), len(ds.heldout),
             tuple(ds.train.shape[1:]), args.out)


if __name__ == "__main__":
    main_guard(main)
