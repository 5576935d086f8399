"""Reference statistics for FID: Inception features of a dataset's training pool (or a seeded
subset of `count` images of it) at the resolution and channels the models are trained on, in the
configured FID mode (clean or legacy_tensorflow), which the statistics carry.

    python -m stages.fidref --ref <ref-key> --out results/fidref/<ref-key>.npz

Stored as our own artifact (mu, sigma, n, and what they depend on), never inside clean-fid's folder.
"""
from __future__ import annotations

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

    from diffrepro.data import reference_images
    from diffrepro.device import pick_device
    from diffrepro.metrics.fid import feature_statistics, features_from_array, save_statistics, statistics_meta
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params

    params = load_params(args.params)
    spec = find_job(params, "fidref", args.ref, args.params).spec
    ds, count, mode = spec["dataset"], spec["count"], spec["fid"]["mode"]
    images, how, source = reference_images(ds, count)
    device = pick_device(args.device)
    batch = args.batch_size or params["evaluation"]["fid"].get("batch_size", 64)
    feats = features_from_array(images, device=device, batch_size=batch, mode=mode, progress=not args.no_progress)
    mu, sigma = feature_statistics(feats)
    meta = {**statistics_meta(mode, images.shape[1:]), "dataset": ds, "count": len(images), "resize_to_train": how,
            "source": source.get("description", ""), "pixels_sha256": source["content"]["pixels_sha256"]}
    save_statistics(args.out, mu, sigma, len(images), meta)
    log.info("reference statistics of %d %s images (%s mode) -> %s", len(images), ds["key"], mode, args.out)


if __name__ == "__main__":
    main_guard(main)
