"""The U-Net's fast modules: subclasses of the plain ones (diffrepro/nets/unet.py) with the same
parameters, state-dict keys and function, whose forward takes the speed paths that are on (`paths`).

  channels_last  activations stored channels-last (the layout cuDNN's bf16 convolutions want), with a group
                 norm by channel (norm.py) and an attention that splits heads without leaving that order
  fused_norm     group norm + SiLU + dropout as one Triton kernel each way (fused_norm.py); conv0's bias joins
                 the embedding's shift inside it
  matmul_conv    1x1 convolutions and the first layer as matrix products (conv.py); swapped in by make_fast
  upsample       2x nearest upsampling by broadcasting (its gradient a sum, not a scatter-add), and an
                 upsampling block's 1x1 skip convolution before the upsampling (the two commute)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets.unet import SongUNet, UNetBlock
from .norm import group_norm_act, is_channels_last


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling; a channels-last tensor is repeated by broadcasting (the same values as
    F.interpolate, whose gradient is a scatter-add with atomics under torch.compile)."""
    if not is_channels_last(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")
    B, C, H, W = x.shape
    x = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(B, H, 2, W, 2, C)
    return x.reshape(B, 2 * H, 2 * W, C).permute(0, 3, 1, 2)


class FastUNetBlock(UNetBlock):
    paths: frozenset = frozenset()

    def resample(self, x):
        if self.up and "upsample" in self.paths:
            return upsample2x(x)
        return super().resample(x)

    def forward(self, x, emb):
        fused = "fused_norm" in self.paths
        orig = x
        x = self.resample(group_norm_act(self.norm0, x, fused))
        if fused:       # conv0's bias joins the embedding's shift in the fused norm: one pass less over x
            x = F.conv2d(x, self.conv0.weight, None, padding=self.conv0.padding)
            add = self.affine(emb) + self.conv0.bias
        else:
            x = self.conv0(x)
            add = self.affine(emb)
        x = group_norm_act(self.norm1, x, fused, add=add, dropout=self.dropout.p if self.training else 0.0)
        x = self.conv1(x)
        if self.skip is None:
            skip = orig
        elif self.up and "upsample" in self.paths:
            skip = upsample2x(self.skip(orig))      # the 1x1 convolution at a quarter of the pixels
        else:
            skip = self.skip(self.resample(orig))
        x = (x + skip) * self.skip_scale

        if self.num_heads:
            a = self.attention(self.qkv(group_norm_act(self.norm2, x, fused, silu=False)))
            x = (self.proj(a) + x) * self.skip_scale
        return x

    def attention(self, qkv):
        """The plain block's attention on qkv (B, 3C, H, W); a channels-last qkv is split into heads in its
        own memory order, and the result returned channels-last (no layout copies around the 1x1 convolutions)."""
        B, C3, H, W = qkv.shape
        heads, C = self.num_heads, C3 // 3
        if "channels_last" in self.paths and is_channels_last(qkv):
            q, k, v = qkv.permute(0, 2, 3, 1).reshape(B, H * W, heads, 3, C // heads).permute(3, 0, 2, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v)                        # (B, heads, HW, C/heads)
            return a.permute(0, 2, 1, 3).reshape(B, H, W, C).permute(0, 3, 1, 2)
        q, k, v = qkv.reshape(B * heads, 3, C // heads, H * W).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return a.transpose(1, 2).reshape(B, C, H, W)


class FastSongUNet(SongUNet):
    """SongUNet whose input is made channels-last when that path is on (its blocks are FastUNetBlocks)."""

    channels_last = False

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return super().forward(x, noise_labels, class_labels, augment_labels)
