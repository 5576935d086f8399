"""The inference kernels that read a decoder block's concatenated input as its parts, never writing the
concatenation (fused_norm.gn_act_parts, norm_split, skip_matmul.skip_residual), and the output layer's
(out_head), against float64 and against the plain path in a U-Net.

On a CPU the Triton kernels run in Triton's interpreter, in a process of its own (tests/parts_check.py);
on a GPU (`-m gpu`) they run compiled.
"""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import run_check

pytest.importorskip("triton")


def _run_check(*args):
    return run_check("parts_check.py", *args)


def _assert_close(results, cuda):
    # a group across two parts, a part of 32 channels (the kernel steps 64), or a gradient: the plain path
    assert results.pop("norm straddling supported") is False
    assert results.pop("skip 32 channels supported") is False
    assert results.pop("skip with gradient supported") is False
    unet, unet_tiled, unet_straddling = results.pop("unet"), results.pop("unet tiled"), results.pop("unet straddling")
    # with DIFFREPRO_SPLIT_NORM=0 the straddling block concatenates, and neither pooling nor the head is fused
    off = results.pop("unet split off")
    assert off["split_calls"] == [] and off["head_calls"] == 0 and off["pools_given_moments"] == [], off
    assert off["parts_calls"] == [256] * 3 and off["y"] < 1e-5, off
    # groups straddling two parts (given the first part's moments or not), per-channel moments, the output layer
    split = results.pop("split")
    assert split["supported"] and split["channels_last"] and max(split["computed"], split["given"]) < 2e-6, split
    assert all(v < 2e-6 for v in results.pop("channel moments").values())
    scale_shift = results.pop("scale shift")                # straddling groups, moments over 1 and 4 blocks
    assert set(scale_shift) == {"one", "two"} and all(v < 2e-6 for v in scale_shift.values()), scale_shift
    # a downsampling block's norm + box filter, and its skip's pooled input, in one pass
    pool = results.pop("pool")
    assert pool["supported"] and not pool["odd supported"] and pool["channels_last"], pool
    assert max(pool["computed"], pool["given"], pool["x pooled"]) < 2e-6 and pool["wrong"] > 0.1, pool
    head = results.pop("head")
    assert head.pop("5x7 supported") is False                  # 35 pixels: no block of 16 divides them
    for key in ("64->3 8x8", "32->1 4x12"):
        assert head.pop(key + " supported") and head.pop(key + " wrong moments") > 0.1, (key, head)
    assert len(head) == 4 and all(v < 2e-6 for v in head.values()), head
    # the residual sum's output, and its moments against those of the output it stored
    m = results.pop("moments")
    assert m.pop("moments_shape") == [2, 2, 128, 2], m                       # (B, H*W / 64, C, 2)
    assert m["y"] < 2e-6 and m["moments"] < 2e-6, m
    # the tiled group norm given one part's moments: exact, and those moments are what it used
    norm_moments = results.pop("norm moments")
    assert norm_moments["y"] < 2e-6 and norm_moments["wrong_moments_y"] > 0.1, norm_moments
    # a U-Net whose norms all walk their input twice: the 8x8 encoder block's output (a residual sum)
    # came with its moments to the two norms that read it (the down block's, which pools as it normalizes,
    # and a decoder part), and the output is the plain path's
    assert unet_tiled["norms_given_moments"] == 1 and unet_tiled["parts_calls"] == [128] * 4, unet_tiled
    assert unet_tiled["pools_given_moments"] == [True], unet_tiled
    assert unet_tiled["y"] < 1e-5, unet_tiled
    bf16 = results.pop("skip bf16", None)
    assert (bf16 is not None) == cuda
    if cuda:
        assert bf16["supported"] and bf16["y"] < 1e-2, bf16
    assert sum(k.startswith("norm") for k in results) == 8 and sum(k.startswith("skip") for k in results) == 3
    for key, r in results.items():
        assert r["supported"] and r["channels_last"] and r["dtype_kept"], (key, r)
        assert r["y"] < 2e-6, (key, r)                      # float32 kernels vs float64
    # the U-Net's three decoder blocks whose input is 64 + 64 channels took the parts; the last one
    # (64 + 32) was concatenated
    assert unet["parts_calls"] == [128, 128, 128] and unet["norms_given_moments"] == 0, unet
    assert unet["y"] < 1e-5, unet
    # every U-Net's output layer took out_head; with 128 + 64 channels in groups of 6 the last decoder block's
    # groups straddle its parts: it took norm_split, the three before it fused_norm's parts
    assert unet["head_calls"] == unet_tiled["head_calls"] == unet_straddling["head_calls"] == 1
    # each U-Net's one downsampling block pooled in its norm's pass (given moments only where norms read twice)
    assert unet["pools_given_moments"] == unet_straddling["pools_given_moments"] == [False], (unet, unet_straddling)
    assert unet["split_calls"] == unet_tiled["split_calls"] == [], (unet, unet_tiled)
    assert unet_straddling["split_calls"] == [[128, 64]] and unet_straddling["parts_calls"] == [256] * 3, unet_straddling
    assert unet_straddling["y"] < 1e-5, unet_straddling


@pytest.mark.integration
def test_parts_kernels_interpreted():
    _assert_close(_run_check(), cuda=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_parts_kernels_cuda():
    _assert_close(_run_check("--cuda"), cuda=True)
