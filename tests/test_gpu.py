"""GPU checks, run by `make test-gpu` (with every other test marked `gpu`) on a CUDA machine before a change
to the network, the speed paths, the trainer or the samplers is committed:

  * every training entry of params.yaml whose network is a U-Net trains with that entry's own settings
    (precision, fast, compile_mode, batch size, network) for STEPS steps on image-like data: the loss stays
    finite and falls. Shortened: STEPS steps, and a learning-rate warm-up of 10 steps instead of the entry's
    (DDPM++'s 10 Mimg would leave the rate near zero);
  * sampling through the fast path (eager and compiled) stays within 0.01 of fp32 (Heun 18, random weights);
  * the fast network against the plain one: float32 values and gradients to float32 rounding, and under
    bf16 autocast and torch.compile (one graph, no break) within bf16 tolerance.

A first run compiles every setting (minutes); the compile cache (diffrepro.fast.use_compile_cache) makes
later runs, and the benchmarks' runs of the same shapes, start in seconds.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from diffrepro.nets import UNET_PRESETS, build_network

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
UNET_ENTRIES = [name for name, t in PARAMS["training"].items() if t["network"] in UNET_PRESETS]
STEPS = 40
CHANNELS = {"fashion_mnist": 1, "cifar10": 3}

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _data_shape(entry: str) -> tuple[int, int]:
    """(channels, resolution) of the data set a profile trains this entry on."""
    for profile in PARAMS["profiles"].values():
        for exp in profile.get("experiments", []):
            if exp["training"] == entry:
                ds = PARAMS["datasets"][exp["dataset"]]
                return CHANNELS[ds["name"]], ds["resolution"]
    return 3, 32


def _images(n, channels, res, seed=0):
    """Smooth random images in [-1, 1] (image-like spectra: a network learns them quickly)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, res // 4, res // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(res, res), mode="bicubic", align_corners=False)
    return (x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1)


def _eval_loss(D, data, precision):
    """EDM's weighted loss on fixed images, sigmas from 0.02 to 20 and noise, in eval mode (no dropout)."""
    g = torch.Generator().manual_seed(1)
    y = data[:256].cuda()
    sigma = torch.exp(torch.linspace(math.log(0.02), math.log(20), len(y))).cuda()
    n = torch.randn(y.shape, generator=g).cuda()
    D.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = D(y + n * sigma[:, None, None, None], sigma).float()
    D.train()
    return (D.loss_weight(sigma)[:, None, None, None] * (out - y) ** 2).mean().item()


@pytest.fixture
def fresh_compiler():
    """Each training setting starts as a pipeline job does, in a process of its own: no compiled graphs, CUDA
    graph pools or cached memory left by the settings before it (without this, on one H100, the DDPM++ setting
    did not finish within 5 minutes after the eight others, while alone it passed in 35 s)."""
    import gc
    torch.compiler.reset()
    gc.collect()
    torch.cuda.empty_cache()
    yield
    torch.compiler.reset()
    gc.collect()
    torch.cuda.empty_cache()


@pytest.mark.parametrize("entry", UNET_ENTRIES)
def test_training_setting_runs_and_learns(entry, fresh_compiler):
    from diffrepro.loss import DenoisingLoss
    from diffrepro.precond import EDMPrecond
    from diffrepro.sigma_dist import LogNormal
    from diffrepro.training import TrainConfig, Trainer

    t = PARAMS["training"][entry]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(seed=0, **{k: v for k, v in t.items() if k in names})        # as stages/train.py builds it
    cfg = dataclasses.replace(cfg, steps=STEPS, lr_warmup_img=min(cfg.lr_warmup_img, 10 * cfg.batch_size),
                              log_every=10, checkpoint_every=STEPS)
    channels, res = _data_shape(entry)
    torch.manual_seed(0)
    net = build_network(t["network"], channels=channels, img_resolution=res, **t.get("network_kw", {}))
    data = _images(4096, channels, res)
    tr = Trainer(EDMPrecond(net), DenoisingLoss(LogNormal()), data, cfg, device="cuda", progress=False)
    before = _eval_loss(tr.denoiser, data, cfg.precision)
    tr.run()
    after = _eval_loss(tr.denoiser, data, cfg.precision)
    losses = [r["value"] for r in tr.state.metrics if r["metric"] == "train_loss"]
    print(f"{entry}: fast={cfg.fast} compile_mode={cfg.compile_mode} batch={cfg.batch_size} precision="
          f"{cfg.precision}: train loss {[round(v, 4) for v in losses]}, eval loss {before:.4f} -> {after:.4f}")
    assert len(losses) == STEPS // 10 and all(math.isfinite(v) for v in losses), losses
    assert math.isfinite(after) and after < 0.8 * before, (before, after)
    assert type(tr.denoiser.net).__name__ == ("FastSongUNet" if cfg.fast else "SongUNet")


def _random_denoiser(preset, channels):
    from diffrepro.precond import EDMPrecond
    torch.manual_seed(0)
    net = build_network(preset, channels=channels, img_resolution=32)
    with torch.no_grad():                                       # an active output layer
        torch.nn.init.xavier_uniform_(net.out_conv.weight, gain=0.2)
    return EDMPrecond(net).cuda().eval().requires_grad_(False)


@pytest.mark.parametrize("compile", [False, True])
def test_sampling_fast_path_stays_close_to_fp32(compile):
    """What the sample stage runs on a GPU (bf16 autocast, compiled or not) against fp32 with TF32 off,
    the same seeds: every value within 0.01 on the [-1, 1] scale."""
    from diffrepro.fast import AutocastNet
    from diffrepro.inference import for_sampling
    from diffrepro.samplers import generate

    ref = _random_denoiser("small", 1)
    D, what = for_sampling(copy.deepcopy(ref), "cuda", compile=compile)
    assert isinstance(getattr(D.net, "_orig_mod", D.net), AutocastNet) and what.startswith("bf16")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            x_ref = generate(ref, (1, 32, 32), list(range(64)), device="cuda", num_steps=18).samples.float()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    with torch.no_grad():
        x = generate(D, (1, 32, 32), list(range(64)), device="cuda", num_steps=18).samples.float()
    diff = (x - x_ref).abs()
    print(f"fast{' compiled' if compile else ''} vs fp32: max {diff.max():.4g}, mean {diff.mean():.3g}, "
          f"signal rms {x_ref.pow(2).mean().sqrt():.3g}")
    assert torch.isfinite(x).all() and x_ref.std() > 0.1
    assert 0 < diff.max() < 0.01, diff.max()


def _grads(net, x, c):
    net.zero_grad()
    y = net(x, c)
    (y.float() * torch.linspace(-1, 1, y.numel(), device=y.device).reshape(y.shape)).sum().backward()
    return [y.detach().float()] + [p.grad.float() for p in net.parameters()]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def test_fast_network_matches_plain_in_float32():
    """The fused kernels compiled for the GPU, eager: output and every parameter gradient of the `small` U-Net
    (3 channels, no dropout) to float32 rounding of the plain network's, TF32 off."""
    from diffrepro import fast
    torch.manual_seed(0)
    plain = build_network("small", channels=3, img_resolution=32, dropout=0.0).cuda()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net = fast.make_fast(copy.deepcopy(plain))
    x, c = torch.randn(8, 3, 32, 32, device="cuda"), torch.randn(8, device="cuda")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        got, ref = _grads(net, x, c), _grads(plain, x, c)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    errors = [_rel(a, b) for a, b in zip(got, ref)]
    assert max(errors) < 1e-3 and errors[0] < 1e-4, sorted(errors)[-5:]


def test_compiled_fast_network_in_bf16_matches_plain():
    """torch.compile traces the fast network in one graph (fullgraph: a break raises) and, under bf16 autocast,
    its output and gradients stay within bf16 tolerance of the plain network in float32 (a wrong gradient is off
    by about 1)."""
    from diffrepro import fast
    torch.manual_seed(0)
    plain = build_network("tiny", channels=3, img_resolution=16).cuda()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net = fast.make_fast(copy.deepcopy(plain))
    x, c = torch.randn(16, 3, 16, 16, device="cuda"), torch.randn(16, device="cuda")
    compiled = torch.compile(net, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = _grads(compiled, x, c)
    ref = _grads(plain, x, c)
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()     # noqa: E731  (bf16: ~1e-2 out, up to ~7e-2 per gradient)
    out_error, grad_errors = rel(got[0], ref[0]), [rel(a, b) for a, b in zip(got[1:], ref[1:])]
    print(f"bf16 compiled fast vs fp32 plain: output {out_error:.3g}, gradients mean {sum(grad_errors) / len(grad_errors):.3g}, "
          f"max {max(grad_errors):.3g}")
    assert 0 < out_error < 3e-2, out_error
    assert max(grad_errors) < 0.15 and sum(grad_errors) / len(grad_errors) < 0.05, sorted(grad_errors)[-5:]
