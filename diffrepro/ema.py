"""Exponential moving average of weights with EDM's half-life in images and ramp-up.

    beta = 0.5 ** (batch_size / max(min(halflife_nimg, rampup_ratio * nimg_seen), 1e-8))
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def ema_beta(batch_size: int, nimg_seen: int, halflife_nimg: float, rampup_ratio: float | None = 0.05) -> float:
    halflife = halflife_nimg
    if rampup_ratio is not None:
        halflife = min(halflife, nimg_seen * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


class EMA:
    def __init__(self, net: nn.Module, halflife_nimg: float = 500_000, rampup_ratio: float | None = 0.05):
        self.model = copy.deepcopy(net).eval().requires_grad_(False)
        self.halflife_nimg, self.rampup_ratio = halflife_nimg, rampup_ratio

    @torch.no_grad()
    def update(self, net: nn.Module, batch_size: int, nimg_seen: int) -> float:
        """Call after the optimizer step; `nimg_seen` counts images including this batch."""
        beta = ema_beta(batch_size, nimg_seen, self.halflife_nimg, self.rampup_ratio)
        # ema += (1 - beta) * (net - ema), for all parameters in a few multi-tensor kernels
        get_ema_multi_avg_fn(beta)(list(self.model.parameters()), [p.detach() for p in net.parameters()], None)
        for b_ema, b_net in zip(self.model.buffers(), net.buffers()):
            b_ema.copy_(b_net)
        return beta

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
