"""The denoiser the samplers call (diffrepro.inference.for_sampling): the fast path only on a GPU, and never
when asked for fp32 or when DIFFREPRO_FAST=0."""
import torch

from diffrepro.inference import for_sampling
from diffrepro.nets import build_network
from diffrepro.nets.unet import UNetBlock
from diffrepro.precond import EDMPrecond


def _plain_blocks(D):
    return all(type(m) is UNetBlock for m in D.modules() if isinstance(m, UNetBlock))


def test_cpu_and_fp32_sample_with_the_model_as_it_is(monkeypatch):
    D = EDMPrecond(build_network("tiny", channels=1, img_resolution=8)).eval()
    net = D.net
    assert for_sampling(D, "cpu") == (D, "fp32") and D.net is net and _plain_blocks(D)
    assert for_sampling(D, "cuda", fp32=True) == (D, "fp32") and D.net is net and _plain_blocks(D)
    monkeypatch.setenv("DIFFREPRO_FAST", "0")
    assert for_sampling(D, "cuda") == (D, "fp32") and D.net is net and _plain_blocks(D)


def test_gpu_samples_in_bf16_through_the_compiled_plain_network(monkeypatch):
    """On a GPU (here: the decision alone, without compiling) the raw network is wrapped in bf16 autocast and
    compiled, inside the same preconditioning; no speed path is swapped in (they lose on sampling)."""
    import diffrepro.fast as fast
    calls = []
    monkeypatch.setattr(fast, "compile_model", lambda m, mode=None: calls.append(mode) or m)
    D = EDMPrecond(build_network("tiny", channels=1, img_resolution=8)).eval()
    out, what = for_sampling(D, torch.device("cuda"), compile_mode="max-autotune-no-cudagraphs")
    assert out is D and what == "bf16+compile" and calls == ["max-autotune-no-cudagraphs"]
    assert isinstance(D.net, fast.AutocastNet) and _plain_blocks(D)
    assert type(D.net.net).__name__ == "SongUNet" and not any(isinstance(m, fast.norm.FastGroupNorm)
                                                              for m in D.modules())
    assert for_sampling(EDMPrecond(build_network("tiny", channels=1, img_resolution=8)), "cuda",
                        compile=False)[1] == "bf16"
    assert calls == ["max-autotune-no-cudagraphs"]
