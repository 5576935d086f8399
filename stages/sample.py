"""Draw samples from a trained model with the configured sampler.

    python -m stages.sample --eval <eval-key> --model results/runs/<run>/model.pt --out results/evals/<eval-key>

Sample k always starts from seed k (one generator per sample), so samples do not depend on the
batch size or device count, and every run is compared on the same latents. Writes samples.npy
(uint8 NHWC for images, float32 for 2D toys) and grid.png.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from stages._common import add_device, add_params, log, main_guard, parser


def draw(denoiser, shape, num_samples, sampling: dict, device, batch_size, progress=True):
    from tqdm.auto import tqdm

    from diffrepro.samplers import generate_batches, to_uint8

    kw = {k: v for k, v in sampling.items() if k not in ("name",)}
    # every batch has the same shape (compiled graphs are reused): the last is padded with seeds past the end
    seed_batches = [list(range(start, start + batch_size)) for start in range(0, num_samples, batch_size)]
    chunks, nfe = [], 0
    bar = tqdm(total=num_samples, desc="sample", unit="img", disable=not progress, mininterval=5)
    with torch.no_grad():
        for seeds, res in zip(seed_batches, generate_batches(denoiser, shape, seed_batches, device=device, **kw)):
            x = res.samples[:num_samples - seeds[0]]
            chunks.append(to_uint8(x) if len(shape) == 3 else x.float().cpu().numpy())
            nfe = res.nfe
            bar.update(len(x))
    bar.close()
    return np.concatenate(chunks), nfe


def main(argv=None):
    p = parser(__doc__)
    add_params(p)
    p.add_argument("--eval", required=True, help="evaluation key (from the workflow plan)")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="evaluation folder")
    p.add_argument("--batch-size", type=int, default=None, help="default: evaluation.sample_batch_size")
    add_device(p)
    p.add_argument("--fp32", action="store_true", help="plain fp32, no torch.compile (the GPU default is bf16 + compile)")
    p.add_argument("--no-compile", action="store_true", help="bf16 without torch.compile (short jobs: skips compile time)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from diffrepro.device import pick_device
    from diffrepro.io import atomic_save_npy, atomic_write_json
    from diffrepro.models import load_model
    from diffrepro.pipeline.grid import find_job
    from diffrepro.pipeline.params import load_params
    from diffrepro.plots import save_image_grid, save_scatter
    from diffrepro.provenance import environment

    params = load_params(args.params)
    spec = find_job(params, "sample", args.eval, args.params).spec
    device = pick_device(args.device)
    D, rec = load_model(args.model, device)
    from diffrepro.inference import for_sampling
    D, precision = for_sampling(D, device, fp32=args.fp32, compile=not args.no_compile)
    shape = tuple(rec["data_shape"])
    batch = min(args.batch_size or params["evaluation"].get("sample_batch_size", 256), spec["num_samples"])
    out = Path(args.out)
    t0 = time.time()
    samples, nfe = draw(D, shape, spec["num_samples"], spec["sampling"], device, batch, not args.no_progress)
    wall = time.time() - t0
    log.info("%d samples, %d NFE each, in %.1f s", len(samples), nfe, wall)
    if samples.ndim == 4:
        save_image_grid(out / "grid.png", samples[:64])
    else:
        save_scatter(out / "grid.png", samples, title=args.eval.split("__")[0])
    from diffrepro.samplers import trained_range
    smp = spec["sampling"]     # the schedule's sigma range, clamped to the network's trained range (as sampled)
    rng = trained_range(D, smp.get("discretization", "edm"), smp.get("sigma_min"), smp.get("sigma_max"))
    atomic_write_json(out / "sample_info.json", {"eval": args.eval, "nfe": nfe, "num_samples": len(samples),
                                                 "sigma_range": [rng["sigma_min"], rng["sigma_max"]] if rng else None,
                                                 "sampling": spec["sampling"], "wall_time_s": wall,
                                                 "precision": precision,
                                                 **environment(device)})
    atomic_save_npy(out / "samples.npy", samples)


if __name__ == "__main__":
    main_guard(main)
