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


def test_checkpoints_from_before_the_rewrite_load_and_compute_the_same():
    """A `tiny` U-Net's state dict, input and output saved by the network as it was before it was rewritten to
    read like EDM's (tests/data/make_unet_fixture.py): the same keys load strictly into today's network and
    give the same output, to float32 rounding."""
    from pathlib import Path
    saved = torch.load(Path(__file__).parent / "data" / "unet_tiny_129ecb4.pt")
    net = build_network("tiny", channels=3, img_resolution=16, label_dim=10).eval()
    net.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()})
    with torch.no_grad():
        y = net(saved["x"], saved["noise_labels"], saved["class_labels"])
    ref = saved["output"]
    assert ref.std() > 0.1                              # an active network, not the zero-initialised output
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    with torch.no_grad():                               # and it is not a coincidence: other labels, other output
        other = net(saved["x"], saved["noise_labels"], saved["class_labels"].flip(0))
    assert (other - ref).abs().max() > 1e-2


def test_augmentation_conditioning_as_in_edm():
    """augment_dim > 0 adds map_augment (no bias) to the noise embedding: zero augmentation labels give the
    output of no labels, others change it; the preconditioning passes them through; a network built without it
    refuses them, and a network with it keeps every other key (checkpoints without it still load)."""
    from diffrepro.precond import EDMPrecond
    torch.manual_seed(0)
    net = build_network("tiny", channels=1, img_resolution=8, augment_dim=9)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert net.map_augment.weight.shape == (16, 9) and net.map_augment.bias is None
    D = EDMPrecond(net)
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        none, zero = D(x, sigma), D(x, sigma, augment_labels=torch.zeros(3, 9))
        some = D(x, sigma, augment_labels=torch.eye(9)[:3])
    torch.testing.assert_close(zero, none, rtol=0, atol=0)
    assert (some - none).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    plain = build_network("tiny", channels=1, img_resolution=8)
    assert set(net.state_dict()) - set(plain.state_dict()) == {"map_augment.weight"}
    with pytest.raises(ValueError, match="augment_dim=0"):
        EDMPrecond(plain)(x, sigma, augment_labels=torch.zeros(3, 9))


def test_plain_network_imports_no_speed_code():
    """The network reads like the paper: nothing under diffrepro/nets imports the speed package or a kernel."""
    import ast
    from pathlib import Path
    import diffrepro.nets
    for f in Path(diffrepro.nets.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any("fast" in n or "triton" in n for n in names), (f.name, names)


def test_unet_in_float64_matches_float32():
    """The whole network runs in float64 (the reference the fast paths are checked against)."""
    torch.manual_seed(0)
    net = build_network("tiny", channels=3, img_resolution=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2)
    with torch.no_grad():
        y32, y64 = net(x, c), net.double()(x.double(), c.double())
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5 * y64.abs().max().item())
