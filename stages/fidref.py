"""Reference statistics for FID: Inception features of a dataset's training split (or a seeded
subset of `count` images of it) at the resolution the models are trained on.

    python -m stages.fidref --ref <ref-key> --out results/fidref/<ref-key>.npz

Stored as our own artifact (mu, sigma, n, and what they depend on), never inside clean-fid's folder.
"""
from __future__ import annotations

import numpy as np

from stages._common import add_device, add_params, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--ref", required=True, help="reference key (from the workflow plan)")
    p.add_argument("--out", required=True, help=".npz statistics file")
    p.add_argument("--batch-size", type=int, default=None, help="default: evaluation.fid.batch_size")
    add_device(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from diffrepro.data import to_resolution
    from diffrepro.data.prepare import load_raw
    from diffrepro.device import pick_device
    from diffrepro.metrics.fid import feature_statistics, features_from_array, save_statistics, statistics_meta
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    params = load_params(args.params)
    spec = find_job(params, "fidref", args.ref, args.params).spec
    ds, count = spec["dataset"], spec["count"]
    raw = load_raw(ds["name"], "train", ds.get("source"), ds.get("allow_download", False))
    images = raw.images
    if count is not None and count < len(images):
        idx = np.sort(np.random.default_rng(ds.get("seed", 0)).permutation(len(images))[:count])
        images = images[idx]
    images, how = to_resolution(images, ds.get("resolution") or images.shape[1])
    device = pick_device(args.device)
    batch = args.batch_size or params["evaluation"]["fid"].get("batch_size", 64)
    feats = features_from_array(images, device=device, batch_size=batch, progress=not args.no_progress)
    mu, sigma = feature_statistics(feats)
    meta = {**statistics_meta(spec["fid"]["mode"]), "dataset": ds, "count": len(images), "resize_to_train": how,
            "source": raw.source.get("description", "") if isinstance(raw.source, dict) else str(raw.source)}
    save_statistics(args.out, mu, sigma, len(images), meta)
    log.info("reference statistics of %d %s images -> %s", len(images), ds["key"], args.out)


if __name__ == "__main__":
    main_guard(main)
