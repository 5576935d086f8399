"""DDPM++ U-Net (Song et al. 2021) as configured in EDM's SongUNet (Karras et al. 2022, networks.py):
'standard' encoder and decoder, residual blocks with group norm and an additive per-block noise
embedding, self-attention at chosen resolutions, dropout, box-filter resampling ([1, 1]), optional class
and augmentation conditioning.

The raw network F(x_in, c_noise, class_labels, augment_labels) that a Preconditioning wraps. It is written
to be checked against the reference, with plain PyTorch modules only; the speed paths (diffrepro/fast/)
are swapped in from outside and never imported here.

Where it departs from EDM's code (the same network either way): the output layer is one group norm and
3x3 convolution after the decoder (EDM's `aux_norm`/`aux_conv` of level 0, named `out_norm`/`out_conv`
here), attention is PyTorch's scaled_dot_product_attention, and qkv's channels split as (head, q/k/v,
channel) where EDM interleaves them as (head, channel, q/k/v): a permutation of qkv's output channels.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import build_embedding


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=1e-6)


def _conv(cin: int, cout: int, kernel: int, init_scale: float = 1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(cin: int, cout: int, init_scale: float = 1.0, bias: bool = True) -> nn.Linear:
    lin = nn.Linear(cin, cout, bias=bias)
    nn.init.xavier_uniform_(lin.weight, gain=init_scale)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


class UNetBlock(nn.Module):
    """Residual block: GN-SiLU-(resample)-conv, + affine(emb), GN-SiLU-dropout-conv, + skip, (attention)."""

    def __init__(self, cin, cout, emb_channels, up=False, down=False, attention=False,
                 dropout=0.0, skip_scale=math.sqrt(0.5), channels_per_head: Optional[int] = None):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.up, self.down, self.skip_scale = up, down, skip_scale
        self.norm0 = _group_norm(cin)
        self.conv0 = _conv(cin, cout, 3)
        self.affine = _linear(emb_channels, cout)
        self.norm1 = _group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _conv(cout, cout, 3, init_scale=1e-5)
        self.skip = _conv(cin, cout, 1) if (cin != cout or up or down) else None
        self.num_heads = 0
        if attention:
            self.num_heads = 1 if channels_per_head is None else max(1, cout // channels_per_head)
            self.norm2 = _group_norm(cout)
            self.qkv = _conv(cout, cout * 3, 1, init_scale=math.sqrt(0.2))
            self.proj = _conv(cout, cout, 1, init_scale=1e-5)

    def resample(self, x):
        """EDM's resample_filter=[1, 1]: a 2x2 box filter, i.e. nearest-neighbour up, average-pool down."""
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb):
        orig = x
        x = self.conv0(self.resample(F.silu(self.norm0(x))))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None].to(x.dtype)))
        x = self.conv1(self.dropout(x))
        x = x + (self.skip(self.resample(orig)) if self.skip is not None else orig)
        x = x * self.skip_scale

        if self.num_heads:
            B, C, H, W = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(B * self.num_heads, 3, C // self.num_heads, H * W).unbind(1)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            x = self.proj(a.transpose(1, 2).reshape(B, C, H, W)) + x
            x = x * self.skip_scale
        return x


class SongUNet(nn.Module):
    def __init__(self, img_resolution: int, in_channels: int, out_channels: Optional[int] = None,
                 label_dim: int = 0, augment_dim: int = 0, model_channels: int = 128,
                 channel_mult: Sequence[int] = (2, 2, 2), channel_mult_emb: int = 4, num_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.10, embedding: str = "positional",
                 channels_per_head: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or in_channels
        emb_channels = model_channels * channel_mult_emb
        self.label_dim, self.augment_dim = label_dim, augment_dim
        self.map_noise = build_embedding(embedding, model_channels)
        self.map_label = _linear(label_dim, model_channels) if label_dim else None
        self.map_augment = _linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = _linear(model_channels, emb_channels)
        self.map_layer1 = _linear(emb_channels, emb_channels)
        block = dict(emb_channels=emb_channels, dropout=dropout, channels_per_head=channels_per_head)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = _conv(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block)
        self.out_norm = _group_norm(cout)
        self.out_conv = _conv(cout, out_channels, 3, init_scale=1e-5)

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        # Mapping.
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap sin/cos
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels (one-hot)")
            emb = emb + self.map_label(class_labels.to(emb.dtype))
        if augment_labels is not None:
            if self.map_augment is None:
                raise ValueError("augment_labels given to a network built with augment_dim=0")
            emb = emb + self.map_augment(augment_labels.to(emb.dtype))
        emb = F.silu(self.map_layer0(emb))
        emb = F.silu(self.map_layer1(emb))

        # Encoder.
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)

        # Decoder.
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
