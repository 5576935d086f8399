"""FID of generated samples against cached reference statistics, in the reference's FID mode; with
--heldout-ref, also against the held-out split's statistics (fid_heldout: generalization beyond the
training images), from the same Inception features.

    python -m stages.fid --spec results/specs/fid/<eval>.json --samples results/evals/<eval>/samples.npy \
        --ref results/fidref/<ref>.npz [--heldout-ref results/fidref/<dataset>-heldout<n>.npz] \
        --out results/evals/<eval>/fid.json

spec: {"mode": "clean", "batch_size": 64, "heldout": false}   (mode: clean or legacy_tensorflow;
      heldout: true when the job scores against the held-out statistics too)

The value depends on the number of samples, on the reference and on the mode: all three are written next
to it. Samples and a reference of different modes, or of different image shapes, are not compared.
"""
from __future__ import annotations

import time

import numpy as np

from diffrepro.cli import SpecError, add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy, uint8 NHWC")
    p.add_argument("--ref", required=True, help="reference statistics (.npz from stages.fidref)")
    p.add_argument("--heldout-ref", default=None,
                   help="reference statistics of the held-out split (.npz from stages.fidref): also fid_heldout")
    p.add_argument("--out", required=True, help="JSON result")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.fid import check_reference, fids_from_arrays, load_statistics

    spec = load_spec(args.spec, "fid")
    if bool(spec.get("heldout")) != bool(args.heldout_ref):
        raise SpecError(f"spec {args.spec} says heldout: {bool(spec.get('heldout'))} but --heldout-ref is "
                        f"{'given' if args.heldout_ref else 'missing'}")
    refs = {"fid": (args.ref, load_statistics(args.ref))}
    if args.heldout_ref:
        refs["fid_heldout"] = (args.heldout_ref, load_statistics(args.heldout_ref))
    samples = np.load(args.samples)
    shape = samples.shape[1:] if samples.ndim == 4 else (*samples.shape[1:], 1)
    try:
        modes = {check_reference(ref, spec.get("mode"), shape, f"reference statistics {path}")
                 for path, ref in refs.values()}
    except ValueError as exc:   # statistics that cannot be compared with these samples: say which and why
        raise SpecError(str(exc)) from None
    if len(modes) > 1:
        raise SpecError(f"{args.ref} and {args.heldout_ref} are of different FID modes ({', '.join(sorted(modes))})")
    mode = modes.pop()
    device = pick_device(args.device)
    t0 = time.time()
    values = fids_from_arrays(samples, {k: ref for k, (_, ref) in refs.items()}, device=device,
                              batch_size=spec.get("batch_size", 64), mode=mode, progress=False)
    ref = refs["fid"][1]
    out = {"fid": values["fid"], "mode": mode, "n_samples": int(len(samples)), "ref": args.ref, "ref_count": ref.n,
           "wall_time_s": time.time() - t0}
    log.info("FID %.4f (%s mode, %d samples vs %d reference images)", values["fid"], mode, len(samples), ref.n)
    if args.heldout_ref:
        held = refs["fid_heldout"][1]
        out.update(fid_heldout=values["fid_heldout"], heldout_ref=args.heldout_ref, heldout_ref_count=held.n)
        log.info("FID against the held-out split %.4f (%d reference images)", values["fid_heldout"], held.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
