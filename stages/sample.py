"""Draw samples from a trained model with the configured sampler.

    python -m stages.sample --spec results/specs/sample/<eval>.json --model results/runs/<run>/model.pt \
        --out results/evals/<eval>

spec: {"eval": "<name>", "sampling": {"sampler": "heun", "num_steps": 18}, "num_samples": 100,
       "batch_size": 100, "compile": false}   (sampling as in params.yaml's sampling.<name>)

Sample k always starts from seed k (one generator per sample), so samples do not depend on the batch
size or device count, and every run is compared on the same latents. Writes samples.npy (uint8 NHWC for
images, float32 for 2D toys), grid.png and sample_info.json (with the schedule's sigma range after
clamping to the range the network was trained on). On a GPU the network runs in bf16 with diffrepro.fast's
speed paths (torch.compile too with "compile": true); --fp32 or DIFFREPRO_FAST=0 turns that off.
"""
from __future__ import annotations

import time
from pathlib import Path

from diffrepro.cli import add_device, load_spec, log, main_guard, parser


def main(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", required=True, help="model.pt of a run (stages.train)")
    p.add_argument("--out", required=True, help="evaluation folder")
    add_device(p)
    p.add_argument("--fp32", action="store_true", help="plain fp32 on a GPU (the default there is bf16)")
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.generate import draw_samples
    from diffrepro.inference import for_sampling
    from diffrepro.io import atomic_save_npy, atomic_write_json
    from diffrepro.models import load_model
    from diffrepro.plots import save_image_grid, save_scatter
    from diffrepro.provenance import environment
    from diffrepro.samplers import trained_range

    spec = load_spec(args.spec, "sample", ["sampling", "num_samples"])
    name = spec.get("eval") or Path(args.out).name
    device = pick_device(args.device)
    D, rec = load_model(args.model, device)
    D, precision = for_sampling(D, device, fp32=args.fp32, compile=spec.get("compile", False))
    shape = tuple(rec["data_shape"])
    n = spec["num_samples"]
    batch = min(spec.get("batch_size", 256), n)
    out = Path(args.out)
    t0 = time.time()
    samples, nfe = draw_samples(D, shape, n, spec["sampling"], device, batch)
    wall = time.time() - t0
    log.info("%d samples, %d NFE each, in %.1f s", len(samples), nfe, wall)
    if samples.ndim == 4:
        save_image_grid(out / "grid.png", samples[:64])
    else:
        save_scatter(out / "grid.png", samples, title=spec.get("run", name))
    smp = spec["sampling"]     # the schedule's sigma range, clamped to the network's trained range (as sampled)
    rng = trained_range(D, smp.get("discretization", "edm"), smp.get("sigma_min"), smp.get("sigma_max"))
    atomic_write_json(out / "sample_info.json", {"eval": name, "nfe": nfe, "num_samples": len(samples),
                                                 "sigma_range": [rng["sigma_min"], rng["sigma_max"]] if rng else None,
                                                 "sampling": spec["sampling"], "wall_time_s": wall,
                                                 "precision": precision,
                                                 **environment(device)})
    atomic_save_npy(out / "samples.npy", samples)


if __name__ == "__main__":
    main_guard(main)
