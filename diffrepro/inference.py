"""Fast inference path for sampling on a GPU: bf16 autocast, channels-last and torch.compile around
the raw network, leaving the preconditioning and the sampler's arithmetic in full precision."""
from __future__ import annotations

import torch
from torch import nn

from .nets import inductor_ops


class AutocastNet(nn.Module):
    """Runs the wrapped raw network under autocast and returns float32."""

    def __init__(self, net: nn.Module, dtype=torch.bfloat16, channels_last: bool = True):
        super().__init__()
        self.net, self.dtype, self.channels_last = net, dtype, channels_last

    def forward(self, x, noise_labels, class_labels=None):
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, noise_labels, class_labels)
        return out.float()


def make_fast(denoiser, precision: str = "bf16", compile: bool = True, channels_last: bool = True,
              compile_mode: str | None = None):
    """Modify `denoiser` (a Preconditioning, weights already loaded) in place for fast sampling.
    `precision`: autocast to bf16 or fp16, or fp32 (no autocast).
    `compile_mode` is torch.compile's mode (e.g. "max-autotune-no-cudagraphs"); None is its default."""
    net = denoiser.net
    torch.backends.cudnn.benchmark = True   # every batch has the same shape
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if precision in ("bf16", "fp16"):
        net = AutocastNet(net, torch.bfloat16 if precision == "bf16" else torch.float16, channels_last)
    elif precision != "fp32":
        raise ValueError(f"precision must be bf16, fp16 or fp32, not {precision!r}")
    if compile:
        inductor_ops.declare()
        net = torch.compile(net, mode=compile_mode)
    denoiser.net = net
    return denoiser
