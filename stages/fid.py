"""FID of generated samples against cached reference statistics, in the reference's FID mode.

    python -m stages.fid --spec results/specs/fid/<eval>.json --samples results/evals/<eval>/samples.npy \
        --ref results/fidref/<ref>.npz --out results/evals/<eval>/fid.json

spec: {"mode": "clean", "batch_size": 64}   (mode: clean or legacy_tensorflow)

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
    p.add_argument("--out", required=True, help="JSON result")
    add_device(p)
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.fid import check_reference, fid_from_arrays, load_statistics

    spec = load_spec(args.spec, "fid")
    ref = load_statistics(args.ref)
    samples = np.load(args.samples)
    shape = samples.shape[1:] if samples.ndim == 4 else (*samples.shape[1:], 1)
    try:
        mode = check_reference(ref, spec.get("mode"), shape, f"reference statistics {args.ref}")
    except ValueError as exc:   # statistics that cannot be compared with these samples: say which and why
        raise SpecError(str(exc)) from None
    device = pick_device(args.device)
    t0 = time.time()
    value = fid_from_arrays(samples, ref, device=device, batch_size=spec.get("batch_size", 64), mode=mode,
                            progress=False)
    out = {"fid": value, "mode": mode, "n_samples": int(len(samples)), "ref": args.ref, "ref_count": ref.n,
           "wall_time_s": time.time() - t0}
    log.info("FID %.4f (%s mode, %d samples vs %d reference images)", value, mode, len(samples), ref.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
