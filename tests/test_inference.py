"""The fast sampling path's set-up (diffrepro.inference) against the network it wraps."""
import copy
import math

import torch

from diffrepro.inference import AutocastNet, make_fast, store_matrix_weights
from diffrepro.nets.unet import SongUNet
from diffrepro.precond import EDMPrecond


def _denoiser():
    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=3, model_channels=16, channel_mult=(1, 2), num_blocks=1,
                   attn_resolutions=(4,), dropout=0.0)
    for m in net.modules():             # non-zero outputs everywhere (zero-initialised layers made active)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight[0].numel()))
    return EDMPrecond(net).eval()


def test_weights_stored_in_the_autocast_dtype_give_the_same_output():
    """Autocast rounds every convolution and linear weight to bf16 on each call; stored rounded (make_fast),
    the network computes the same values bit for bit. The upsampling block's conv0, whose taps are summed
    before the rounding, stays float32; biases and norms too."""
    D = _denoiser()
    ref = copy.deepcopy(D)
    ref.net = AutocastNet(ref.net.to(memory_format=torch.channels_last), torch.bfloat16)   # weights float32
    make_fast(D, "bf16", compile=False)
    x, sigma = torch.randn(3, 3, 8, 8) * 5, torch.tensor([0.1, 2.0, 40.0])
    with torch.no_grad():
        assert torch.equal(D(x, sigma), ref(x, sigma))
    dtypes = {name: p.dtype for name, p in D.net.named_parameters()}
    up = [n for n in dtypes if ".dec." in f".{n}" and "_up.conv0.weight" in n]
    assert up and all(dtypes[n] == torch.float32 for n in up)
    assert dtypes["net.map_layer0.weight"] == dtypes["net.enc.8x8_block0.conv0.weight"] == torch.bfloat16
    assert all(dtypes[n] == torch.float32 for n in dtypes if n.endswith(".bias") or "norm" in n)


def test_summed_weights_rounded_first_would_differ():
    """The check above can fail: rounding the upsampling convolution's weight too changes the output."""
    D = _denoiser()
    ref = copy.deepcopy(D)
    make_fast(ref, "bf16", compile=False)
    make_fast(D, "bf16", compile=False)
    for m in D.net.modules():
        m.weight_summed = False
    store_matrix_weights(D.net, torch.bfloat16)
    x, sigma = torch.randn(3, 3, 8, 8) * 5, torch.tensor([0.1, 2.0, 40.0])
    with torch.no_grad():
        assert not torch.equal(D(x, sigma), ref(x, sigma))
