"""FID of generated samples against cached reference statistics, in the reference's FID mode.

    python -m stages.fid --samples results/evals/<e>/samples.npy --ref results/fidref/<r>.npz --out fid.json

The value depends on the number of samples, on the reference and on the mode (clean or legacy_tensorflow):
all three are written next to it. Samples and a reference of different modes are not compared.
"""
from __future__ import annotations

import time

import numpy as np

from stages._common import add_device, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--samples", required=True, help="samples.npy, uint8 NHWC")
    p.add_argument("--ref", required=True, help="reference statistics (.npz from stages.fidref)")
    p.add_argument("--out", required=True, help="JSON result")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mode", default=None, help="FID mode; default: the reference's (a different one is refused)")
    add_device(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_write_json
    from diffrepro.metrics.fid import check_reference, fid_from_arrays, load_statistics

    ref = load_statistics(args.ref)
    samples = np.load(args.samples)
    shape = samples.shape[1:] if samples.ndim == 4 else (*samples.shape[1:], 1)
    mode = check_reference(ref, args.mode, shape, f"reference statistics {args.ref}")
    device = pick_device(args.device)
    t0 = time.time()
    value = fid_from_arrays(samples, ref, device=device, batch_size=args.batch_size, mode=mode,
                            progress=not args.no_progress)
    out = {"fid": value, "mode": mode, "n_samples": int(len(samples)), "ref": args.ref, "ref_count": ref.n,
           "wall_time_s": time.time() - t0}
    log.info("FID %.4f (%s mode, %d samples vs %d reference images)", value, mode, len(samples), ref.n)
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main_guard(main)
