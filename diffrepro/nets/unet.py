"""DDPM++-style U-Net (Song et al. 2021 as configured in EDM's SongUNet, 'standard' encoder and
decoder): residual blocks with group norm and a per-block affine noise embedding, self-attention at
chosen resolutions, dropout, box-filter resampling, optional class conditioning.

The raw network F(x_in, c_noise, class_labels) that a Preconditioning wraps.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from .conv import Conv2d, conv2d, upsampled_conv3x3
from .embedding import build_embedding
from .norm import GroupNorm, is_channels_last
from . import fused_norm, norm_split, out_head, skip_matmul


def _group_norm(channels: int) -> nn.GroupNorm:
    return GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=1e-6)


def _conv(cin, cout, kernel, init_scale=1.0):
    conv = Conv2d(cin, cout, kernel, padding=kernel // 2)
    nn.init.xavier_uniform_(conv.weight, gain=init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(cin, cout, init_scale=1.0):
    lin = nn.Linear(cin, cout)
    nn.init.xavier_uniform_(lin.weight, gain=init_scale)
    nn.init.zeros_(lin.bias)
    return lin


def _upsample2x(x):
    """Nearest-neighbour 2x upsampling. A channels-last tensor is repeated by broadcasting instead
    of F.interpolate, whose gradient is a scatter-add (atomics) under torch.compile; the values are
    the same."""
    if not is_channels_last(x):
        return nnf.interpolate(x, scale_factor=2, mode="nearest")
    B, C, H, W = x.shape
    x = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(B, H, 2, W, 2, C)
    return x.reshape(B, 2 * H, 2 * W, C).permute(0, 3, 1, 2)


class UNetBlock(nn.Module):
    """Residual block: GN-SiLU-conv, + affine(emb), GN-SiLU-dropout-conv, skip, (attention)."""

    def __init__(self, cin, cout, emb_channels, up=False, down=False, attention=False,
                 dropout=0.0, skip_scale=math.sqrt(0.5), channels_per_head: Optional[int] = None):
        super().__init__()
        self.up, self.down, self.skip_scale = up, down, skip_scale
        self.norm0 = _group_norm(cin)
        self.conv0 = _conv(cin, cout, 3)
        # sampling sums this weight's taps (conv.upsampled_conv3x3) before autocast rounds them: keep it float32
        self.conv0.weight_summed = up
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

    def _resample(self, x):
        # EDM's resample_filter=[1,1]: a 2x2 box filter, i.e. nearest up / average-pool down.
        if self.up:
            x = _upsample2x(x)
        if self.down:
            x = nnf.avg_pool2d(x, 2)
        return x

    def _takes_parts(self, parts):
        """Whether this block reads a concatenated input as its parts (the inference kernels)."""
        return (self.skip is not None and not (self.up or self.down) and self.norm0.takes_parts(parts)
                and skip_matmul.supported(parts, self.skip.weight))

    def forward(self, x, emb):
        """x: the input, or a tuple of tensors that make it when concatenated along channels (a decoder
        block's input and an encoder output)."""
        return self.run(list(x) if isinstance(x, tuple) else [x], emb)[0]

    def run(self, parts, emb, moments=None):
        """The block on the channel concatenation of `parts`: (output, the output's moments or None).

        When sampling on a GPU the concatenation is never written (the inference kernels read the parts),
        and a block whose skip is its input writes its output with the output's per-channel moments
        (skip_matmul.residual_sum), which the group norms that read it take instead of making a pass over it
        for its statistics; `moments` are the parts' moments where known."""
        moments = list(moments) if moments is not None else [None] * len(parts)
        if len(parts) > 1 and not self._takes_parts(parts):
            parts, moments = [torch.cat(parts, dim=1)], [None]
        x, pooled = parts[0], None
        if self.down and self.norm0.affine and norm_split.pool_supported(x, self.norm0.num_groups):
            # sampling: the norm's output is pooled as it is computed, the skip's input pooled in the same pass
            h, pooled = norm_split.group_norm_act_pool(x, self.norm0.num_groups, self.norm0.weight, self.norm0.bias,
                                                       self.norm0.eps, moments=moments[0])
        else:
            h = self.norm0.act_parts(parts, moments=moments)
        # sampling: an upsampling block's conv0 reads the input at its own resolution (conv.upsampled_conv3x3)
        subpixel = self.up and is_channels_last(h) and not fused_norm.wants_grad(h, self.conv0.weight)
        if not (subpixel or pooled is not None):
            h = self._resample(h)
        dropout = self.dropout.p if self.training else 0.0
        if self.norm1.fused(h):
            # conv0's bias joins the embedding's shift inside the fused norm: one pass less over h
            h = upsampled_conv3x3(h, self.conv0.weight) if subpixel else \
                conv2d(h, self.conv0.weight, None, self.conv0.padding[0])
            add = self.affine(emb).float() + self.conv0.bias.float()
        else:
            h = upsampled_conv3x3(h, self.conv0.weight, self.conv0.bias) if subpixel else self.conv0(h)
            add = self.affine(emb).to(h.dtype)
        h = self.norm1.act(h, add=add, dropout=dropout)
        want = self._wants_moments(h)
        mom = None
        if self.skip is not None and not (self.up or self.down) and skip_matmul.supported(parts, self.skip.weight):
            # the skip product's epilogue adds conv1's bias with its own: one pass less over h
            h = conv2d(h, self.conv1.weight, None, self.conv1.padding[0])
            x = skip_matmul.skip_residual(parts, self.skip.weight, self.skip.bias + self.conv1.bias, h,
                                          self.skip_scale)
        elif self.skip is None and want and skip_matmul.residual_supported(h, x):
            h = conv2d(h, self.conv1.weight, None, self.conv1.padding[0])
            x, mom = skip_matmul.residual_sum(h, x, self.conv1.bias, self.skip_scale)
        else:
            x = self._residual(h, x, parts, pooled)
        if self.num_heads:
            h = self.norm2.act_parts([x], silu=False, moments=[mom])
            a = self._attention(self.qkv(h))
            if skip_matmul.supported([a], self.proj.weight):      # the projection and the sum in one kernel
                x, mom = skip_matmul.skip_residual([a], self.proj.weight, self.proj.bias, x, self.skip_scale), None
            else:
                x, mom = (self.proj(a) + x) * self.skip_scale, None
        return x, mom

    def _wants_moments(self, h):
        """Whether the output (shaped like h) should come with its moments: a fused group norm would
        otherwise walk it twice."""
        B, C, H, W = h.shape
        return (self.norm1.fused(h) and skip_matmul.moments_supported(h) and not fused_norm.wants_grad(h)
                and fused_norm.reads_twice(H * W, C, self.norm1.num_groups))

    def _residual(self, h, x, parts, pooled=None):
        """(conv1(h) + skip(x)) * skip_scale, one op at a time; pooled: x already downsampled, where given."""
        h = self.conv1(h)
        if self.skip is None:
            return (h + x) * self.skip_scale
        if self.up:
            # a 1x1 convolution commutes with nearest upsampling: the same sums at a quarter of the
            # pixels, and the upsampled copy of the input is never written
            return (h + _upsample2x(self.skip(x))) * self.skip_scale
        if self.down:
            return (h + self.skip(pooled if pooled is not None else self._resample(x))) * self.skip_scale
        return skip_matmul.plain(parts, self.skip.weight, self.skip.bias, h, self.skip_scale)

    def _attention(self, qkv):
        # qkv's 3C channels split as (head, q/k/v, C/head), as in EDM; one token per pixel
        B, C3, H, W = qkv.shape
        heads, C = self.num_heads, C3 // 3
        if is_channels_last(qkv):
            # stored as (B, H, W, 3C): split channels without leaving that order, and return the
            # result channels-last too (no layout round trip around the 1x1 convolutions)
            q, k, v = qkv.permute(0, 2, 3, 1).reshape(B, H * W, heads, 3, C // heads).permute(3, 0, 2, 1, 4)
            a = nnf.scaled_dot_product_attention(q, k, v)                      # (B, heads, HW, C/heads)
            return a.permute(0, 2, 1, 3).reshape(B, H, W, C).permute(0, 3, 1, 2)
        q, k, v = qkv.reshape(B * heads, 3, C // heads, H * W).unbind(1)
        a = nnf.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return a.transpose(1, 2).reshape(B, C, H, W)


class SongUNet(nn.Module):
    def __init__(self, img_resolution: int, in_channels: int, out_channels: Optional[int] = None,
                 label_dim: int = 0, model_channels: int = 128, channel_mult: Sequence[int] = (2, 2, 2),
                 channel_mult_emb: int = 4, num_blocks: int = 4, attn_resolutions: Sequence[int] = (16,),
                 dropout: float = 0.10, embedding: str = "positional", channels_per_head: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or in_channels
        emb_channels = model_channels * channel_mult_emb
        self.label_dim = label_dim
        self.map_noise = build_embedding(embedding, model_channels)
        self.map_label = _linear(label_dim, model_channels) if label_dim else None
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
        skips = [m.conv0.out_channels if isinstance(m, UNetBlock) else m.out_channels for m in self.enc.values()]

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

    def forward(self, x, noise_labels, class_labels=None):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap sin/cos
        if self.map_label is not None:
            if class_labels is None:
                raise ValueError("this network is class-conditional: pass class_labels (one-hot)")
            emb = emb + self.map_label(class_labels.to(emb.dtype))
        emb = nnf.silu(self.map_layer0(emb))
        emb = nnf.silu(self.map_layer1(emb)).to(x.dtype)

        skips, mom = [], None                     # each block's output, with its moments where known
        for name, block in self.enc.items():
            x, mom = block.run([x], emb, [mom]) if isinstance(block, UNetBlock) else (block(x), None)
            skips.append((x, mom))
        for name, block in self.dec.items():
            if x.shape[1] != block.norm0.num_channels:      # concatenated with an encoder output
                s, s_mom = skips.pop()
                x, mom = block.run([x, s], emb, [mom, s_mom])
            else:
                x, mom = block.run([x], emb, [mom])
        if self.out_norm.affine and out_head.supported(x, self.out_norm.num_groups, self.out_conv.weight):
            return out_head.head(x, self.out_norm, self.out_conv, mom)      # the norm's output is never written
        return self.out_conv(self.out_norm.act_parts([x], moments=[mom]))
