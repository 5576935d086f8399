"""A 3x3 convolution over parts of the batch (nets/conv_parts.py): every part lands in its rows of the output,
the sums are F.conv2d's, the fastest split is the one kept, and the U-Net and torch.compile take the path."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf

from diffrepro.nets import conv_parts
from diffrepro.nets.conv import conv2d


def _inputs(batch, cin=16, cout=8, size=6, dtype=torch.bfloat16, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, size, size, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(cout, cin, 3, 3, generator=g) / math.sqrt(9 * cin)).to(device)
    return x, w.contiguous(memory_format=torch.channels_last)


def _reference(x, w):
    """float64 sums of the bf16 inputs (the cast autocast would make)."""
    return nnf.conv2d(x.double(), w.to(x.dtype).double(), None, padding=1)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_forced_split_is_the_whole_batch_convolution(monkeypatch, parts):
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", str(parts))
    x, w = _inputs(7)
    b = torch.randn(w.shape[0])
    with torch.no_grad():
        assert conv_parts.supported(x, w, 1)
        y = conv2d(x, w, b, 1)
        assert conv_parts.choices[(tuple(x.shape), tuple(w.shape), 1, x.dtype, "cpu")] == parts
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    ref = _reference(x, w) + b.to(torch.bfloat16).double().view(1, -1, 1, 1)
    # each sample against its own sums: a part written to the wrong rows, or a row left empty, fails
    err = (y.double() - ref).abs().amax(dim=(1, 2, 3)) / ref.abs().amax()
    assert err.max() < 2e-2, err
    whole = nnf.conv2d(x, w.to(x.dtype), None, padding=1) + b.to(torch.bfloat16).view(1, -1, 1, 1)
    assert torch.equal(y, whole)


def test_path_is_taken_only_where_it_applies(monkeypatch):
    x, w = _inputs(4)
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", "2")
    assert conv_parts.supported(x, w, 1)
    assert not conv_parts.supported(x.float(), w, 1)                                   # fp32: cuDNN's own
    assert not conv_parts.supported(x.contiguous(), w, 1)                              # not channels-last
    assert not conv_parts.supported(x, w[:, :, :1, :1], 0)                             # 1x1
    assert not conv_parts.supported(x, w.requires_grad_(), 1)                          # training
    w = w.detach()
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", "0")
    assert not conv_parts.supported(x, w, 1)
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", "auto")
    assert not conv_parts.supported(x, w, 1)                                           # auto needs cuDNN


def test_choose_keeps_the_fastest():
    assert conv_parts.choose([1, 2, 4], {1: 4.4, 2: 4.0, 4: 4.1}.__getitem__) == 2
    assert conv_parts.choose([1, 2, 4], {1: 4.0, 2: 4.4, 4: 4.1}.__getitem__) == 1
    assert conv_parts.choose([1, 2], {1: 3.0, 2: 3.0}.__getitem__) == 1
    # a slow spell that hit one candidate's first timing does not decide: each keeps its best of the rounds
    times = iter([9.0, 4.0, 3.4, 3.9, 3.6, 4.1])              # round by round: 1, 2, 1, 2, 1, 2
    assert conv_parts.choose([1, 2], lambda n: next(times)) == 1


def test_slices_cover_the_batch_once():
    for batch, parts in [(7, 2), (7, 3), (2500, 4), (3, 4)]:
        rows = [i for s in conv_parts._slices(batch, parts) for i in range(batch)[s]]
        assert rows == list(range(batch))


def test_unet_takes_the_split_and_keeps_its_output(monkeypatch):
    from diffrepro.nets.unet import SongUNet
    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=3, model_channels=32, channel_mult=(1, 2), num_blocks=1,
                   attn_resolutions=(4,), dropout=0.0).eval()
    for m in net.modules():             # non-zero outputs everywhere (zero-initialised layers made active)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight[0].numel()))
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    sigma = torch.rand(5)
    outs = {}
    for setting in ("0", "2"):
        monkeypatch.setenv("DIFFREPRO_CONV_PARTS", setting)
        conv_parts.choices.clear()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outs[setting] = net(x, sigma)
        if setting == "2":
            # every 3x3 convolution over 32 or 64 channels went through the split (the first layer, over 3
            # channels, is a matrix product)
            assert {k[1][:2] for k in conv_parts.choices} >= {(32, 32), (64, 32), (64, 64)}, conv_parts.choices
        else:
            assert conv_parts.choices == {}
    assert torch.equal(outs["0"], outs["2"])


@pytest.mark.integration
def test_compiled_code_calls_the_split(monkeypatch):
    from torch._inductor.utils import run_and_get_code

    from diffrepro.nets import inductor_ops
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", "2")
    inductor_ops.declare()
    x, w = _inputs(4)
    b = torch.randn(w.shape[0])
    torch._dynamo.reset()
    with torch.no_grad():
        y, code = run_and_get_code(torch.compile(lambda t: torch.relu(conv2d(t, w, b, 1))), x)
    assert "torch.ops.diffrepro.conv_in_parts.default" in "\n".join(code)
    ref = torch.relu(_reference(x, w) + b.to(torch.bfloat16).double().view(1, -1, 1, 1))
    assert ((y.double() - ref).abs().max() / ref.abs().max()) < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("setting", ["auto", "2", "3"])
def test_cuda_split_is_as_close_as_cudnn(monkeypatch, setting):
    monkeypatch.setenv("DIFFREPRO_CONV_PARTS", setting)
    monkeypatch.setattr(conv_parts, "MIN_PART_PIXELS", 1 << 12)      # let a small batch try its splits
    torch.backends.cudnn.benchmark = True
    x, w = _inputs(64, cin=128, cout=128, size=16, device="cuda")
    with torch.no_grad():
        assert conv_parts.supported(x, w, 1)
        y = conv2d(x, w, None, 1)
        whole = nnf.conv2d(x, w.to(x.dtype), None, padding=1)
    ref = _reference(x, w)
    key = (tuple(x.shape), tuple(w.shape), 1, x.dtype, str(x.device))
    assert conv_parts.choices[key] in ((1, 2, 4) if setting == "auto" else (int(setting),))
    assert y.is_contiguous(memory_format=torch.channels_last)
    err = (y.double() - ref).abs().amax(dim=(1, 2, 3))
    own = (whole.double() - ref).abs().max()
    assert err.max() <= 2 * own + 1e-3, (err.max(), own)                 # every sample, each part's rows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_unet_traces_without_graph_breaks():
    # a break inside a block makes torch.compile trace each block on its own, up to its recompile limit,
    # and run the rest eagerly: sampling took 20% longer when supported() called cudnn.is_available()
    from diffrepro.inference import AutocastNet
    from diffrepro.nets.unet import SongUNet
    net = SongUNet(img_resolution=32, in_channels=3, model_channels=64, channel_mult=(2, 2), num_blocks=1,
                   attn_resolutions=(16,), dropout=0.0).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(512, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(AutocastNet(net))(x, torch.rand(512, device="cuda"))
    assert explained.graph_break_count == 0, [str(b.reason)[:300] for b in explained.break_reasons]
