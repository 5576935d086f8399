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
