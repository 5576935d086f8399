"""torch.compile of a small U-Net on its sampling path, where the package's custom ops feed each other, as JSON
on stdout: which custom ops Inductor met undeclared (it writes a log record for each implicit fallback it
creates), and the compiled output against the eager one.

First, as a control, one custom op compiled before inductor_ops.declare() must be met undeclared; then the
U-Net, compiled through inference.make_fast (which declares every op), must meet none, and its compiled
code must call the ops of the sampling path.

Run by tests/test_inductor_ops.py in a process of its own with TRITON_INTERPRET=1 (Triton's interpreter on the
CPU); with --cuda on a GPU.
"""
from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import types

# compile from scratch: a graph served from Inductor's cache is not lowered again, and meets no op
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-ops-check-")
atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], True)
os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"

import torch  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402

os.environ["DIFFREPRO_SPLIT_NORM"] = "1"

from diffrepro.inference import make_fast  # noqa: E402
from diffrepro.nets import inductor_ops, norm_split  # noqa: E402
from diffrepro.nets.unet import SongUNet  # noqa: E402

met = []


class _Fallbacks(logging.Handler):
    """Collects the ops named by Inductor's 'Creating implicit fallback' records."""

    def emit(self, record):
        if "implicit fallback" in str(record.msg):
            met.extend(line.split("target:", 1)[1].strip() for line in record.getMessage().splitlines()
                       if "target:" in line)


def main():
    device = "cuda" if "--cuda" in sys.argv else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # float32 means float32
    graph_log = logging.getLogger("torch._inductor.graph")
    graph_log.setLevel(logging.INFO)
    graph_log.addHandler(_Fallbacks())
    out = {}
    # control: channel_moments compiled before anything declared it
    x = torch.randn(2, 64, 8, 8, device=device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.compile(norm_split.channel_moments)(x)
    out["control met"] = list(met)
    met.clear()

    torch.manual_seed(0)
    net = SongUNet(img_resolution=8, in_channels=3, model_channels=64, channel_mult=(2, 2), num_blocks=1,
                   attn_resolutions=(4,), dropout=0.0).to(device).eval()
    for m in net.modules():             # non-zero outputs everywhere (zero-initialised layers made active)
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight[0].numel()))
    x = torch.randn(2, 3, 8, 8, device=device).contiguous(memory_format=torch.channels_last)
    sigma = torch.rand(2, device=device)
    with torch.no_grad():
        eager = net.to(memory_format=torch.channels_last)(x, sigma)
        fast = make_fast(types.SimpleNamespace(net=net), precision="fp32")
        compiled, code = run_and_get_code(fast.net, x, sigma)
    out["unet met"] = list(met)
    # the ops the compiled code calls (as fallback kernels)
    out["unet calls"] = sorted(set(re.findall(r"torch\.ops\.diffrepro\.(\w+)\.default", "\n".join(code))))
    out["declared"] = sorted(str(op) for op in inductor_ops.ops())
    out["y"] = ((compiled.double() - eager.double()).abs().max() / eager.double().abs().max()).item()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
