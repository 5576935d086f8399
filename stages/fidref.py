"""Reference statistics for FID: Inception features of a dataset's training split (or a seeded subset of
`count` images of it) at the resolution the models are trained on.

    python -m stages.fidref --spec results/specs/fidref/fmnist-ref200.json --out results/fidref/fmnist-ref200.npz

spec: {"dataset": {"name": "fashion_mnist", "resolution": 32, "seed": 0}, "count": 200,
       "fid": {"mode": "clean", "batch_size": 64}}

Stored as our own artifact (mu, sigma, n, and what they depend on), never inside clean-fid's folder.
--source as for stages.prepare.
"""
from __future__ import annotations

import numpy as np

from diffrepro.cli import add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--out", required=True, help=".npz statistics file")
    p.add_argument("--source", default="auto", help="folder or archive of the raw dataset files (auto: standard places)")
    p.add_argument("--download", choices=["yes", "no"], default="no", help="download (verified) when not found")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import to_resolution
    from diffrepro.data.prepare import load_raw
    from diffrepro.device import pick_device
    from diffrepro.metrics.fid import feature_statistics, features_from_array, save_statistics, statistics_meta

    spec = load_spec(args.spec, "fidref", ["dataset", "fid"])
    ds, count, fid = spec["dataset"], spec.get("count"), spec["fid"]
    raw = load_raw(ds["name"], "train", None if args.source == "auto" else args.source, args.download == "yes")
    images = raw.images
    if count is not None and count < len(images):
        idx = np.sort(np.random.default_rng(ds.get("seed", 0)).permutation(len(images))[:count])
        images = images[idx]
    images, how = to_resolution(images, ds.get("resolution") or images.shape[1])
    device = pick_device(args.device)
    feats = features_from_array(images, device=device, batch_size=fid.get("batch_size", 64), progress=False)
    mu, sigma = feature_statistics(feats)
    meta = {**statistics_meta(fid.get("mode", "clean")), "dataset": ds, "count": len(images), "resize_to_train": how}
    save_statistics(args.out, mu, sigma, len(images), meta)
    log.info("reference statistics of %d %s images -> %s", len(images), ds.get("entry", ds["name"]), args.out)


if __name__ == "__main__":
    main_guard(main)
