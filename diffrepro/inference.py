"""Fast inference path for sampling on a GPU: bf16 autocast, channels-last and torch.compile around
the raw network, leaving the preconditioning and the sampler's arithmetic in full precision."""
from __future__ import annotations

import torch
from torch import nn

from .nets import inductor_ops


class AutocastNet(nn.Module):
    """Runs the wrapped raw network under autocast and returns float32."""

    input_dtype = torch.float32     # what the preconditioning passes in, whatever the weights are stored in

    def __init__(self, net: nn.Module, dtype=torch.bfloat16, channels_last: bool = True):
        super().__init__()
        self.net, self.dtype, self.channels_last = net, dtype, channels_last

    def forward(self, x, noise_labels, class_labels=None):
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, noise_labels, class_labels)
        return out.float()


def store_matrix_weights(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights of `net`'s convolutions and linear layers in `dtype`, the dtype autocast computes
    them in: autocast rounds each one to it on every call (a kernel per weight per call, hundreds per
    sampling step of a U-Net); stored rounded, the same values go in with no kernel. Biases and norm
    parameters stay float32 (the kernels that take them read float32), and so do weights that are summed
    before use (a module's `weight_summed`: rounded first, their sums would round differently)."""
    for m in net.modules():
        if (isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.dtype == torch.float32
                and not getattr(m, "weight_summed", False)):
            m.weight.data = m.weight.data.to(dtype)
    return net


def make_fast(denoiser, precision: str = "bf16", compile: bool = True, channels_last: bool = True,
              compile_mode: str | None = None):
    """Modify `denoiser` (a Preconditioning, weights already loaded) in place for fast sampling.
    `precision`: autocast to bf16 or fp16 (the convolutions' and linear layers' weights are then stored in
    it: store_matrix_weights), or fp32 (no autocast).
    `compile_mode` is torch.compile's mode (e.g. "max-autotune-no-cudagraphs"); None is its default."""
    net = denoiser.net
    torch.backends.cudnn.benchmark = True   # every batch has the same shape
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        net = AutocastNet(store_matrix_weights(net, dtype), dtype, channels_last)
    elif precision != "fp32":
        raise ValueError(f"precision must be bf16, fp16 or fp32, not {precision!r}")
    if compile:
        inductor_ops.declare()
        net = torch.compile(net, mode=compile_mode)
    denoiser.net = net
    return denoiser
