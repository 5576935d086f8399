"""A large-batch 3x3 convolution run as cuDNN convolutions over parts of the batch, written into one output.

Which kernel cuDNN's autotuning settles on depends on the batch size. On an H100 in bf16, DDPM++'s 256 -> 256
channel 3x3 convolution at 32x32 takes 4.40 ms over 2,500 images and 2 x 2.02 ms over two halves of them
(benchmarks/RESULTS.md): the halves take a faster kernel. Whether a split pays depends on the GPU, the
shape and the cuDNN version, so it is chosen like cuDNN's own algorithm: on a shape's first call, the
whole batch and each split into PARTS are timed, and the fastest is kept for that shape. Each part's
convolution writes its rows of the one output (a batch slice of a channels-last tensor is itself
contiguous), so a split costs no copy.

Forward only, bf16 / fp16, channels-last, on CUDA with cuDNN autotuning on; the same sums as F.conv2d over
the whole batch. DIFFREPRO_CONV_PARTS=0 switches the path off; an integer N > 0 forces N parts on any device
(the tests run a forced split on the CPU).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as nnf

from . import fused_norm

PARTS = (1, 2, 4)               # the splits timed on a shape's first call
MIN_PART_PIXELS = 1 << 19       # a split into parts of fewer pixels (images x H x W) is not tried
HALF = (torch.bfloat16, torch.float16)
HAS_CUDNN = torch.backends.cudnn.is_available()    # read here: under torch.compile (2.11) the call breaks the graph

choices: dict[tuple, int] = {}  # shape key -> parts, for every shape met (benchmarks report it)


def _setting() -> str:
    return os.environ.get("DIFFREPRO_CONV_PARTS", "auto")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype F.conv2d would compute in: autocast's where it is on for x's device, else x's."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def supported(x: torch.Tensor, weight: torch.Tensor, padding: int) -> bool:
    """Whether conv3x3 below takes this convolution: switched on, no gradient wanted, a 4-D channels-last
    input computed in half precision, a 3x3 kernel with 'same' padding, and cuDNN (or a forced split)."""
    setting = _setting()
    if setting == "0" or fused_norm.wants_grad(x, weight):
        return False
    if x.ndim != 4 or weight.shape[2:] != (3, 3) or padding != 1 or _compute_dtype(x) not in HALF:
        return False
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if setting != "auto":
        return True
    return x.is_cuda and HAS_CUDNN


def conv3x3(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, None, padding=padding), computed in the dtype autocast would use."""
    dtype = _compute_dtype(x)
    return conv_in_parts(x.to(dtype), weight.to(dtype), padding)


def _slices(batch: int, parts: int) -> list[slice]:
    bounds = [batch * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _conv_into(x: torch.Tensor, weight: torch.Tensor, padding: int, out: torch.Tensor):
    """out[:] = conv(x, weight), with cuDNN writing straight into `out` where it can."""
    cudnn = torch.backends.cudnn
    if x.is_cuda and HAS_CUDNN and cudnn.enabled:
        torch.ops.aten.cudnn_convolution.out(x, weight, [padding, padding], [1, 1], [1, 1], 1, cudnn.benchmark,
                                             cudnn.deterministic, cudnn.allow_tf32, out=out)
    else:
        out.copy_(nnf.conv2d(x, weight, None, padding=padding))


def _empty_output(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    """The channels-last output of a 3x3 convolution of x with this weight and padding, unwritten."""
    B, _, H, W = x.shape
    return torch.empty((B, weight.shape[0], H + 2 * padding - 2, W + 2 * padding - 2), dtype=x.dtype,
                       device=x.device, memory_format=torch.channels_last)


def run(x: torch.Tensor, weight: torch.Tensor, padding: int, parts: int) -> torch.Tensor:
    """The convolution over `parts` slices of the batch, into one channels-last output."""
    if parts == 1:
        return nnf.conv2d(x, weight, None, padding=padding)
    out = _empty_output(x, weight, padding)
    for s in _slices(x.shape[0], parts):
        _conv_into(x[s], weight, padding, out[s])
    return out


def _ms(fn, repeats: int = 5) -> float:
    fn()                                                # cuDNN autotunes each part's shape here
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def choose(candidates, time_ms, rounds: int = 3) -> int:
    """The candidate with the least time_ms(candidate), each timed `rounds` times in turn (so that a slow
    spell of the GPU falls on all of them) and its best time kept; the first of equals."""
    best = {n: float("inf") for n in candidates}
    for _ in range(rounds):
        for n in candidates:
            best[n] = min(best[n], time_ms(n))
    return min(candidates, key=lambda n: best[n])


def parts_for(x: torch.Tensor, weight: torch.Tensor, padding: int) -> int:
    """How many parts this shape runs in: forced, or timed on its first call and kept."""
    setting = _setting()
    key = (tuple(x.shape), tuple(weight.shape), padding, x.dtype, str(x.device))
    if setting != "auto":
        choices[key] = min(int(setting), x.shape[0])
        return choices[key]
    if key in choices:
        return choices[key]
    B, _, H, W = x.shape
    candidates = [n for n in PARTS if n <= B and (n == 1 or B * H * W // n >= MIN_PART_PIXELS)]
    if len(candidates) == 1 or not torch.backends.cudnn.benchmark:
        choices[key] = 1
    elif torch.cuda.is_current_stream_capturing():
        return 1                                        # no timing inside a CUDA graph capture: not kept
    else:
        choices[key] = choose(candidates, lambda n: _ms(lambda: run(x, weight, padding, n)))
    return choices[key]


@torch.library.custom_op("diffrepro::conv_in_parts", mutates_args=())
def conv_in_parts(x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    return run(x, weight, padding, parts_for(x, weight, padding))


@conv_in_parts.register_fake
def _(x, weight, padding):
    return _empty_output(x, weight, padding)
