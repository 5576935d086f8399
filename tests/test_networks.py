import pytest
import torch

from diffrepro.nets import MLP_PRESETS, build_network, count_parameters
from diffrepro.precond import EDMPrecond


def test_tiny_preset_is_small_and_ddpmpp_matches_edm():
    assert count_parameters(build_network("tiny", channels=3)) < 1_000_000
    n = count_parameters(build_network("ddpmpp-cifar", channels=3))
    print(f"ddpmpp-cifar parameters: {n:,}")
    assert n == pytest.approx(55.7e6, rel=0.01)   # EDM reports 55.7M for its CIFAR-10 DDPM++


@pytest.mark.parametrize("channels,res", [(1, 32), (3, 16), (4, 8)])
def test_unet_shapes_any_channels(channels, res):
    net = build_network("tiny", channels=channels, img_resolution=res)
    x = torch.randn(3, channels, res, res)
    assert net(x, torch.randn(3)).shape == x.shape


def test_class_conditioning_changes_output_and_is_required():
    torch.manual_seed(0)
    net = build_network("tiny", channels=1, img_resolution=16, label_dim=10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))   # move off the zero init of the output layer
    x, c = torch.randn(2, 1, 16, 16), torch.zeros(2)
    a = net(x, c, torch.eye(10)[[0, 0]])
    b = net(x, c, torch.eye(10)[[0, 1]])
    assert torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="class_labels"):
        net(x, c)


def test_attention_only_where_asked():
    net = build_network("small", channels=1, img_resolution=32)
    attn = [name for name, m in net.named_modules() if getattr(m, "num_heads", 0)]
    assert attn and all(name.startswith(("enc.8x8", "dec.8x8")) for name in attn)


def test_mlp_presets_and_denoiser_wrapping():
    for preset in MLP_PRESETS:
        D = EDMPrecond(build_network(preset, channels=2))
        x = torch.randn(7, 2)
        assert D(x, torch.rand(7) + 0.1).shape == (7, 2)
    with pytest.raises(ValueError, match="unknown network preset"):
        build_network("resnet-9000")


@pytest.mark.parametrize("groups,channels", [(8, 32), (4, 64), (1, 4)])
def test_channels_last_group_norm_equals_torch_in_float64(groups, channels):
    """The per-channel-moments group norm (used for channels-last tensors) is exact: values and
    gradients match F.group_norm in float64 to rounding."""
    from diffrepro.nets.norm import GroupNorm
    torch.manual_seed(0)
    norm = GroupNorm(groups, channels, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 + 2 * torch.randn(5, channels, 6, 7, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    x_ref = x.detach().contiguous().requires_grad_()
    x = x.detach().requires_grad_()
    y, y_ref = norm(x), torch.nn.functional.group_norm(x_ref, groups, norm.weight, norm.bias, 1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, (x, norm.weight, norm.bias), g)
    grads_ref = torch.autograd.grad(y_ref, (x_ref, norm.weight, norm.bias), g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.integration
def test_unet_channels_last_matches_contiguous():
    """The fast paths run the U-Net channels-last (group norm and attention then avoid layout copies);
    outputs and gradients must equal the plain layout's to float32 rounding."""
    import copy
    torch.manual_seed(0)
    net = build_network("small", channels=3, img_resolution=16, dropout=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x, sigma = torch.randn(4, 3, 16, 16), torch.rand(4)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x = x.requires_grad_()
    y, y_cl = net(x, sigma), net_cl(x_cl, sigma)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-4 * y.abs().max().item())
    y.square().sum().backward()
    y_cl.square().sum().backward()
    torch.testing.assert_close(x_cl.grad, x.grad, rtol=1e-4, atol=1e-4 * x.grad.abs().max().item())
    for (name, p), p_cl in zip(net.named_parameters(), net_cl.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-12,
                                   msg=lambda m: f"{name}: {m}")


def test_channels_last_upsampling_equals_interpolate():
    from diffrepro.nets.unet import _upsample2x
    x = torch.randn(2, 5, 3, 4)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = _upsample2x(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    (y * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
    x_ref = x.clone().requires_grad_()
    up = torch.nn.functional.interpolate(x_ref, scale_factor=2, mode="nearest")
    (up * torch.arange(up.numel()).reshape(up.shape)).sum().backward()
    assert torch.equal(x_cl.grad, x_ref.grad)


@pytest.mark.parametrize("cin,cout,k", [(6, 10, 1), (3, 8, 3), (1, 5, 3), (16, 4, 3)])
def test_matrix_product_convolutions_equal_conv2d_in_float64(cin, cout, k, monkeypatch):
    """Channels-last 1x1 convolutions (one matrix product) and 3x3 convolutions of few input channels
    (im2col, padded columns) give F.conv2d's values and gradients; others take F.conv2d itself."""
    from diffrepro.nets import conv
    torch.manual_seed(0)
    x = torch.randn(2, cin, 5, 7, dtype=torch.float64)
    w, b = torch.randn(cout, cin, k, k, dtype=torch.float64), torch.randn(cout, dtype=torch.float64)
    params = [t.clone().requires_grad_() for t in (x, w, b)]
    x_cl = params[0].contiguous(memory_format=torch.channels_last)
    taken = []
    real_conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(conv.nnf, "conv2d", lambda *a, **kw: taken.append("conv2d") or real_conv2d(*a, **kw))
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


def test_matrix_product_conv2d_refuses_what_it_does_not_compute():
    from diffrepro.nets.conv import Conv2d
    Conv2d(4, 8, 3, padding=1)
    for kwargs in (dict(stride=2, padding=1), dict(padding=0), dict(groups=2, padding=1), dict(dilation=2, padding=1)):
        with pytest.raises(ValueError, match="stride 1"):
            Conv2d(4, 8, 3, **kwargs)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampling_block_equals_its_definition_in_float64(channels_last):
    """An upsampling block applies its 1x1 skip convolution before the nearest upsampling instead of
    after (the two commute), and when sampling channels-last its conv0 as four 2x2 convolutions of the
    input (conv.upsampled_conv3x3); its output and gradients must equal the block written as defined."""
    import torch.nn.functional as F
    from diffrepro.nets.unet import UNetBlock
    torch.manual_seed(0)
    block = UNetBlock(8, 12, emb_channels=16, up=True).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 8, 5, 6, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    emb = torch.randn(3, 16, dtype=torch.float64)

    def defined(x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")   # noqa: E731
        h = block.conv0(up(F.silu(block.norm0(x))))
        h = block.conv1(F.silu(block.norm1(h + block.affine(emb)[:, :, None, None])))
        return (h + block.skip(up(x))) * block.skip_scale

    y, ref = block(x, emb), defined(x)
    assert y.shape == (3, 12, 10, 12)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    with torch.no_grad():       # without gradients, channels-last: conv0 reads the input unupsampled
        torch.testing.assert_close(block(x, emb), ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    gx, *gp = torch.autograd.grad(y, [x, *block.parameters()], g)
    gx_ref, *gp_ref = torch.autograd.grad(ref, [x, *block.parameters()], g)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(gp, gp_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(4, 7), (1, 1), (5, 5)])
def test_upsampled_conv_equals_conv_of_upsampled_input_in_float64(size):
    """conv.upsampled_conv3x3 gives F.conv2d of the nearest-upsampled input, both layouts, with and without bias."""
    import torch.nn.functional as F
    from diffrepro.nets.conv import upsampled_conv3x3
    torch.manual_seed(0)
    w, b = torch.randn(6, 5, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 5, *size, dtype=torch.float64).contiguous(memory_format=fmt)
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        for bias in (None, b):
            y = upsampled_conv3x3(x, w, bias)
            torch.testing.assert_close(y, F.conv2d(up, w, bias, padding=1), rtol=1e-12, atol=1e-12)
            assert y.is_contiguous(memory_format=fmt) or x.is_contiguous()     # 1x1: both layouts at once
