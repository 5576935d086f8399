"""The fused group norm + SiLU + dropout kernels (diffrepro/fast/fused_norm.py) against float64.

On a CPU the Triton kernels run in Triton's interpreter, in a process of its own
(tests/fused_norm_check.py); on a GPU (`-m gpu`) they run compiled, and also under torch.compile.
"""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import run_check

pytest.importorskip("triton")


def _run_check(*args):
    return run_check("fused_norm_check.py", *args)


def _assert_close(results):
    results.pop("supported_cpu_interpreter")      # checked where it is known (the interpreted test)
    unet = results.pop("unet")
    masks = results.pop("dropout_masks")                        # 32,768 draws: standard error ~0.003
    assert abs(masks["kept"] - 0.7) < 0.015, masks
    assert abs(masks["both_calls"] - masks["expected_both"]) < 0.015, masks
    assert abs(masks["both_neighbours"] - masks["expected_both"]) < 0.015, masks
    bf16 = results.pop("(2, 64, 4, 4, 8) bf16")
    ddpmpp = {k: tuple(results.pop(k)) for k in list(results) if k.startswith("ddpmpp") and k.endswith("launch")}
    assert ddpmpp == {"ddpmpp (1, 64, 32, 32, 8) launch": (False, True, 4),
                      "ddpmpp (2, 256, 8, 8, 32) launch": (True, True, 1)}, ddpmpp
    for layout in ("resident", "tiled"):
        # each layout ran: every shape read once in the first, walked in several tiles in the second
        launches = {k: tuple(results.pop(k)) for k in list(results) if k.startswith(layout) and k.endswith("launch")}
        assert len(launches) == 5, launches
        if layout == "resident":
            assert all(v[:2] == (True, True) for v in launches.values()), launches
        else:       # all but (2, 64, 4, 4, 8), whose 16 pixels make one tile of the smallest size
            assert sum(v[:2] == (False, False) and v[2] >= 2 for v in launches.values()) == 4, launches
        offset = results.pop(f"{layout} (2, 32, 12, 12, 8) offset fp32")   # mean 100 standard deviations from 0
        for name in ("y", "dx", "dadd", "dweight", "dbias"):     # float32 rounding of x itself: ~6e-6
            assert offset[name] < 3e-5, (name, layout, offset)
    for key, r in results.items():
        assert r.pop("channels_last") and r.pop("dtype_kept"), key
        kept = r.pop("kept_fraction", None)
        if kept is not None:                                   # dropout p = 0.5 (0.1 on the DDPM++ shapes)
            p = float(key.split("p=")[1].split()[0])
            assert abs(kept - (1 - p)) < 0.1 * min(p, 1 - p) + 0.02, (key, kept)
        assert set(r) >= {"y", "dx", "dweight", "dbias"}, key
        for name, err in r.items():                            # fp32 kernels vs float64
            assert err < 2e-6, (key, name, err)
    assert bf16["y"] < 1e-2 and bf16["dx"] < 1e-2 and bf16["dadd"] < 1e-2, bf16
    assert bf16["dweight"] < 1e-5 and bf16["dbias"] < 1e-5, bf16  # fp32 sums of the same bf16 values
    # every group norm of the fast U-Net went through the kernels (one forward), forward and backward agree
    # with the plain network in float64, and torch.compile traces it in one graph
    assert unet["fused_calls"] == unet["norm_layers"] == 24, unet
    for name in ("y", "dnorm1_weight", "ddec_norm0_weight", "dnorm2_weight", "dout_norm_weight", "ddec_conv0_bias"):
        assert unet[name] < 1e-5, (name, unet)
    assert unet["traced"] < 1e-6, unet


@pytest.mark.integration
def test_fused_group_norm_interpreted():
    results = _run_check()
    assert results["supported_cpu_interpreter"] is True
    _assert_close(results)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_group_norm_cuda():
    _assert_close(_run_check("--cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_group_norm_under_compile():
    """torch.compile keeps the kernels (opaque custom ops) and gives the eager values."""
    from diffrepro.fast.norm import group_norm_act
    torch.manual_seed(0)
    gn = torch.nn.GroupNorm(8, 64, eps=1e-6).cuda()
    with torch.no_grad():
        gn.weight.add_(torch.randn(64, device="cuda") * 0.3)
    x = torch.randn(4, 64, 16, 16, device="cuda").to(memory_format=torch.channels_last).requires_grad_()
    add = torch.randn(4, 64, device="cuda", requires_grad=True)
    fn = lambda x, add: group_norm_act(gn, x, True, add=add).square().sum()   # noqa: E731
    eager = torch.autograd.grad(fn(x, add), [x, add, gn.weight])
    compiled = torch.autograd.grad(torch.compile(fn)(x, add), [x, add, gn.weight])
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
