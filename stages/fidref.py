"""Reference statistics for FID: Inception features of a dataset's training pool (or a seeded subset of
`count` images of it) at the resolution and channels the models are trained on, in the spec's FID mode
(clean or legacy_tensorflow), which the statistics carry. "split": "heldout" takes the dataset's held-out
split instead (its test split or heldout_source), for FID against images no model was trained on.

    python -m stages.fidref --spec results/specs/fidref/fmnist-ref100.json --out results/fidref/fmnist-ref100.npz

spec: {"dataset": {"name": "fashion_mnist", "resolution": 32, "seed": 0}, "count": 100,
       "fid": {"mode": "clean", "batch_size": 64}, "split": "train"}
      (dataset: a datasets.<entry> of params.yaml without its paths; your own data names its format)

Stored as our own artifact (mu, sigma, n, and what they depend on), never inside clean-fid's folder.
--source and --download as for stages.prepare.
"""
from __future__ import annotations

from diffrepro.cli import add_device, add_location, load_spec, location, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--out", required=True, help=".npz statistics file")
    add_location(p, "folder, archive or file of the raw dataset (auto: standard places)")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.data import reference_images
    from diffrepro.device import pick_device
    from diffrepro.metrics.fid import feature_statistics, features_from_array, save_statistics, statistics_meta

    spec = load_spec(args.spec, "fidref", ["dataset", "fid"])
    ds, count, fid = spec["dataset"], spec.get("count"), spec["fid"]
    mode = fid.get("mode", "clean")
    where = location(args)
    split = spec.get("split", "train")
    images, how, source = reference_images({**ds, **where}, count, split=split)
    device = pick_device(args.device)
    feats = features_from_array(images, device=device, batch_size=fid.get("batch_size", 64), mode=mode,
                                progress=False)
    mu, sigma = feature_statistics(feats)
    # what the statistics are, not where the files were read from (that goes to the log)
    meta = {**statistics_meta(mode, images.shape[1:]), "dataset": ds, "count": len(images), "split": split,
            "resize_to_train": how, "pixels_sha256": source["content"]["pixels_sha256"]}
    save_statistics(args.out, mu, sigma, len(images), meta)
    log.info("reference statistics of %d %s images (%s mode; read %s) -> %s", len(images),
             ds.get("entry", ds.get("name")), mode, source.get("description", ""), args.out)


if __name__ == "__main__":
    main_guard(main)
