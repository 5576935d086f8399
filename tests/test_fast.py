"""The speed package (diffrepro/fast) on the CPU: make_fast swaps modules in place without touching a weight,
and the fast network computes the plain one's values and gradients in float64, path by path. The fused
group-norm kernel runs in Triton's interpreter in tests/test_fused_norm.py; on a GPU, tests/test_gpu.py."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from diffrepro import fast
from diffrepro.nets import build_network
from diffrepro.nets.unet import UNetBlock
from diffrepro.precond import EDMPrecond


def _active(net, seed=0):
    """Weights moved off their initialisation (the zero-initialised layers made active)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _tiny(channels=3, res=16, **kw):
    torch.manual_seed(0)
    return _active(build_network("tiny", channels=channels, img_resolution=res, **kw))


def test_make_fast_swaps_modules_and_keeps_every_parameter():
    D = EDMPrecond(_tiny(label_dim=4))
    params = dict(D.named_parameters())
    keys = list(D.state_dict())
    assert fast.make_fast(D) is D
    assert dict(D.named_parameters()).keys() == params.keys()
    assert all(p is params[n] for n, p in D.named_parameters())             # the same Parameter objects
    assert list(D.state_dict()) == keys
    kinds = {type(m).__name__ for m in D.modules()}
    assert {"FastSongUNet", "FastUNetBlock", "FastGroupNorm", "MatmulConv2d"} <= kinds
    assert "UNetBlock" not in kinds and "GroupNorm" not in kinds
    assert D.net.enc["16x16_block0"].conv0.weight.is_contiguous(memory_format=torch.channels_last)
    plain = EDMPrecond(_tiny(label_dim=4))
    plain.load_state_dict(D.state_dict())                                   # checkpoints go both ways
    D.load_state_dict(plain.state_dict())


def _grads(net, x, c):
    net.zero_grad()
    x = x.clone().requires_grad_()
    y = net(x, c)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in net.named_parameters()}


@pytest.mark.parametrize("paths", [["channels_last"], ["matmul_conv"], ["upsample"], ["fused_norm"], None])
def test_fast_network_equals_plain_in_float64(paths, one_thread):
    """Values and every gradient, in training mode, path by path and all together (on a CPU without Triton's
    interpreter the fused norm's kernel does not run, but its block code does: conv0's bias in the shift)."""
    plain = _tiny().double().train()
    net = fast.make_fast(copy.deepcopy(plain), paths=paths).train()
    x, c = torch.randn(3, 3, 16, 16, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y, gx, gp = _grads(net, x, c)
    y_ref, gx_ref, gp_ref = _grads(plain, x, c)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    for n in gp_ref:
        torch.testing.assert_close(gp[n], gp_ref[n], rtol=1e-9, atol=1e-12, msg=lambda m: f"{n}: {m}")


def test_unknown_path_and_off_switch(monkeypatch):
    with pytest.raises(ValueError, match="unknown speed path"):
        fast.make_fast(_tiny(), paths=["fused_skip"])
    monkeypatch.setenv("DIFFREPRO_FAST", "0")
    net = _tiny()
    assert fast.make_fast(net, precision="bf16", compile=True) is net
    assert fast.compile_model(net) is net
    assert all(type(m) is UNetBlock for m in net.modules() if isinstance(m, UNetBlock))
    assert net.enc["16x16_block0"].conv0.weight.is_contiguous()


def test_group_norm_by_channel_equals_torch_in_float64():
    """The per-channel-moments group norm (channels-last tensors) is exact: values and gradients match
    F.group_norm in float64 to rounding, for a mean far from zero too."""
    from diffrepro.fast.norm import FastGroupNorm
    for groups, channels in [(8, 32), (4, 64), (1, 4)]:
        torch.manual_seed(0)
        norm = torch.nn.GroupNorm(groups, channels, eps=1e-6).double()
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
        x = (30 + 2 * torch.randn(5, channels, 6, 7, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
        x_ref = x.detach().contiguous().requires_grad_()
        x = x.detach().requires_grad_()
        y_ref = F.group_norm(x_ref, groups, norm.weight, norm.bias, 1e-6)
        norm.__class__ = FastGroupNorm
        y = norm(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(y_ref)
        for a, b in zip(torch.autograd.grad(y, (x, norm.weight, norm.bias), g),
                        torch.autograd.grad(y_ref, (x_ref, norm.weight, norm.bias), g)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_broadcast_upsampling_equals_interpolate():
    from diffrepro.fast.unet import upsample2x
    x = torch.randn(2, 5, 3, 4)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = upsample2x(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, F.interpolate(x, scale_factor=2, mode="nearest"))
    (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
    x_ref = x.clone().requires_grad_()
    up = F.interpolate(x_ref, scale_factor=2, mode="nearest")
    (up * torch.arange(up.numel()).reshape(up.shape)).sum().backward()
    assert torch.equal(x_cl.grad, x_ref.grad)


@pytest.mark.parametrize("cin,cout,k", [(6, 10, 1), (3, 8, 3), (1, 5, 3), (16, 4, 3)])
def test_matrix_product_convolutions_equal_conv2d_in_float64(cin, cout, k, monkeypatch):
    """Channels-last 1x1 convolutions (one matrix product) and 3x3 convolutions of few input channels
    (im2col, padded columns) give F.conv2d's values and gradients; others take F.conv2d itself."""
    from diffrepro.fast import conv
    torch.manual_seed(0)
    x = torch.randn(2, cin, 5, 7, dtype=torch.float64)
    w, b = torch.randn(cout, cin, k, k, dtype=torch.float64), torch.randn(cout, dtype=torch.float64)
    params = [t.clone().requires_grad_() for t in (x, w, b)]
    x_cl = params[0].contiguous(memory_format=torch.channels_last)
    taken = []
    real_conv2d = F.conv2d
    monkeypatch.setattr(conv.F, "conv2d", lambda *a, **kw: taken.append("conv2d") or real_conv2d(*a, **kw))
    y = conv.conv2d(x_cl, params[1], params[2], padding=k // 2)
    monkeypatch.undo()
    expect_mm = cin > 1 and (k == 1 or cin * k * k <= conv.IM2COL_MAX_COLUMNS)   # 1 channel: both layouts coincide
    assert taken == ([] if expect_mm else ["conv2d"])
    assert y.is_contiguous(memory_format=torch.channels_last) or not expect_mm
    ref_params = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = real_conv2d(*ref_params, padding=k // 2)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12)


def test_only_matrix_product_convolutions_are_swapped():
    from diffrepro.fast.conv import MatmulConv2d, has_matrix_product_form
    assert has_matrix_product_form(torch.nn.Conv2d(4, 8, 1)) and has_matrix_product_form(torch.nn.Conv2d(3, 8, 3, padding=1))
    for conv in (torch.nn.Conv2d(16, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1, stride=2),
                 torch.nn.Conv2d(3, 8, 3, padding=0), torch.nn.Conv2d(4, 8, 1, groups=2)):
        assert not has_matrix_product_form(conv)
    net = fast.make_fast(_tiny())
    swapped = {n for n, m in net.named_modules() if isinstance(m, MatmulConv2d)}
    assert "enc.16x16_conv" in swapped and "enc.8x8_block0.qkv" in swapped and "dec.16x16_block0.skip" in swapped
    assert not any(n.endswith(("conv0", "conv1", "out_conv")) for n in swapped)


def test_autocast_wrapper_for_sampling():
    """precision='bf16': the raw network runs under bf16 autocast inside the preconditioning, which gets float32
    back; the values stay within bf16 rounding of the float32 network's."""
    ref = EDMPrecond(_tiny()).eval()
    D = fast.make_fast(copy.deepcopy(ref), precision="bf16")
    assert isinstance(D.net, fast.AutocastNet)
    x, sigma = torch.randn(2, 3, 16, 16), torch.tensor([0.5, 5.0])
    with torch.no_grad():
        y, y_ref = D(x, sigma), ref(x, sigma)
    assert y.dtype == torch.float32
    err = (y - y_ref).abs().max().item() / y_ref.abs().max().item()
    assert 0 < err < 3e-2, err


def test_fast_network_traces_as_one_graph(one_thread):
    """torch.compile meets no graph break in the fast network (tracing only, no code generation here)."""
    net = fast.make_fast(_tiny()).eval()
    x, c = torch.randn(2, 3, 16, 16), torch.randn(2)
    with torch.no_grad():
        traced = torch.compile(net, backend="eager", fullgraph=True)(x, c)
        torch.testing.assert_close(traced, net(x, c), rtol=0, atol=0)


def test_compile_cache_folder(monkeypatch, tmp_path):
    """The persistent compile cache: under $DIFFREPRO_COMPILE_CACHE (or results/.compile-cache), one folder per
    PyTorch version and per version of the speed code, given to Inductor and Triton."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "unset")       # restored after the test
    monkeypatch.setenv("TRITON_CACHE_DIR", "unset")
    monkeypatch.setattr(fast, "_cache_root", None)
    monkeypatch.setenv("DIFFREPRO_COMPILE_CACHE", str(tmp_path / "cc"))
    folder = fast.use_compile_cache()
    assert folder.parent == tmp_path / "cc" and torch.__version__ in folder.name
    assert (folder / "triton").is_dir()
    import os
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder) and os.environ["TRITON_CACHE_DIR"] == str(folder / "triton")
    assert fast.cache_folder(tmp_path / "other").name == folder.name
    chosen = fast.use_compile_cache(tmp_path / "chosen")              # a root given once is kept (compile_model)
    assert fast.use_compile_cache() == chosen and chosen.parent == tmp_path / "chosen"
    monkeypatch.setattr(fast, "_cache_root", None)
    monkeypatch.delenv("DIFFREPRO_COMPILE_CACHE")
    assert fast.cache_folder().parent == fast.DEFAULT_CACHE
