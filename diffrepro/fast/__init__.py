"""The speed paths, applied to a built network from outside; the plain network (diffrepro/nets) never
imports this package.

    make_fast(model)        swaps the kept speed paths in: module by module, each module keeps its Parameter
                            objects and state-dict keys (a checkpoint saved from either loads into the other);
                            with precision="bf16" (sampling) the network runs under bf16 autocast; with
                            compile=True it is torch.compile'd
    compile_model(model)    torch.compile with the persistent compile cache (use_compile_cache)

One switch turns all of it on: `fast: true` in a training entry of params.yaml (the sample stage takes the
fast path on any GPU unless --fp32). One environment variable turns all of it off: DIFFREPRO_FAST=0 makes
make_fast and compile_model return the model untouched (the network as written, eager), to tell whether a
problem lies in the speed code. Which paths exist and what each one bought: docs/performance.md and
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

log = logging.getLogger("diffrepro")

# every kept speed path (diffrepro/fast/unet.py says what each does); the others need channels_last
PATHS = ("channels_last", "fused_norm", "matmul_conv", "upsample")
ENV = "DIFFREPRO_FAST"
CACHE_ENV = "DIFFREPRO_COMPILE_CACHE"
DEFAULT_CACHE = Path("results") / ".compile-cache"
# a cache folder the user chose before this package was imported (later, Inductor sets the variable itself)
_USER_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
_cache_root: Optional[Path] = None        # the root last given to use_compile_cache


def enabled() -> bool:
    """False when DIFFREPRO_FAST=0: every speed path off."""
    return os.environ.get(ENV, "1") != "0"


def resolve_paths(paths: Optional[Iterable[str]] = None) -> frozenset:
    """The set of paths to apply (all of PATHS by default); the others need channels_last, which is added."""
    chosen = frozenset(PATHS if paths is None else paths)
    unknown = chosen - set(PATHS)
    if unknown:
        raise ValueError(f"unknown speed path(s) {sorted(unknown)}; choose from {list(PATHS)}")
    return chosen | {"channels_last"} if chosen else chosen


class AutocastNet(nn.Module):
    """Runs the wrapped raw network under autocast (bf16 or fp16) and returns float32; the preconditioning
    around it and the sampler's arithmetic stay in full precision."""

    input_dtype = torch.float32     # what the preconditioning passes in

    def __init__(self, net: nn.Module, dtype=torch.bfloat16):
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, x, noise_labels, class_labels=None, **kwargs):
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, noise_labels, class_labels, **kwargs)
        return out.float()


def _swap(module: nn.Module, cls: type, **attrs) -> None:
    """Make `module` an instance of `cls`, a subclass of its class with the same parameters: the module object,
    its Parameter objects and its state-dict keys stay what they were; only its forward changes."""
    module.__class__ = cls
    for k, v in attrs.items():
        setattr(module, k, v)


def swap_modules(net: nn.Module, paths: Optional[Iterable[str]] = None) -> nn.Module:
    """In place: every plain module of `net` that has a fast form on these paths becomes it, and with
    channels_last the parameters are stored channels-last. Returns `net`."""
    from ..nets.unet import SongUNet, UNetBlock
    from .conv import MatmulConv2d, has_matrix_product_form
    from .norm import FastGroupNorm
    from .unet import FastSongUNet, FastUNetBlock

    paths = resolve_paths(paths)
    if not paths:
        return net
    for m in net.modules():
        if type(m) is UNetBlock:
            _swap(m, FastUNetBlock, paths=paths)
        elif type(m) is nn.GroupNorm:
            _swap(m, FastGroupNorm, fused="fused_norm" in paths)
        elif type(m) is nn.Conv2d and "matmul_conv" in paths and has_matrix_product_form(m):
            _swap(m, MatmulConv2d)
        elif type(m) is SongUNet:
            _swap(m, FastSongUNet, channels_last=True)
    return net.to(memory_format=torch.channels_last)


def make_fast(model: nn.Module, *, paths: Optional[Iterable[str]] = None, precision: Optional[str] = None,
              compile: bool = False, compile_mode: Optional[str] = None) -> nn.Module:
    """The fast version of `model`, a Preconditioning (its `net` is changed) or a raw network; returns what to
    call in its place (the model itself unless compiled).

    paths: the speed paths to swap in (default: every kept one, PATHS), in place, weights kept.
    precision: "bf16" or "fp16" runs the raw network under autocast (AutocastNet; for sampling: the
        preconditioning's state-dict keys then gain a level); None leaves precision to the caller (the
        trainer's autocast covers the whole loss).
    compile: torch.compile the raw network (inside the preconditioning, whose arithmetic stays eager) with
        `compile_mode`, through compile_model. The trainer compiles its whole model with compile_model instead.
    With DIFFREPRO_FAST=0 the model is returned untouched."""
    if not enabled():
        log.info("%s=0: every speed path off (the plain network, eager)", ENV)
        return model
    wrapper = model if hasattr(model, "net") else None
    net = swap_modules(model.net if wrapper is not None else model, paths)
    if precision in ("bf16", "fp16"):
        net = AutocastNet(net, torch.bfloat16 if precision == "bf16" else torch.float16)
    elif precision not in (None, "fp32"):
        raise ValueError(f"precision must be bf16, fp16, fp32 or None, not {precision!r}")
    if compile:
        net = compile_model(net, compile_mode)
    if wrapper is None:
        return net
    wrapper.net = net
    return wrapper


def compile_model(model: nn.Module, mode: Optional[str] = None) -> nn.Module:
    """torch.compile(model, mode=mode), its compiled code kept in the persistent cache (use_compile_cache, unless
    TORCHINDUCTOR_CACHE_DIR was set when this package was imported); the model itself with DIFFREPRO_FAST=0."""
    if not enabled():
        return model
    if _USER_CACHE is None:
        use_compile_cache(_cache_root)
    torch.backends.cudnn.benchmark = True           # fixed shapes: cuDNN times its kernels once per shape
    return torch.compile(model, mode=mode)


def cache_folder(root: Optional[os.PathLike] = None) -> Path:
    """Where compiled code is kept: `root` (default $DIFFREPRO_COMPILE_CACHE, else results/.compile-cache under
    the working directory, the pipeline's results folder), in a subfolder per PyTorch version and per version
    of this package's source. torch.compile's cache keys hold the traced graph, not the source of the custom
    ops it calls, so code compiled against an older kernel must not be found after the kernel changes."""
    root = Path(root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    digest = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(f.name.encode() + f.read_bytes())
    return root / f"torch-{torch.__version__}-fast-{digest.hexdigest()[:12]}"


def use_compile_cache(root: Optional[os.PathLike] = None) -> Path:
    """Point torch.compile's persistent caches (Inductor's, TORCHINDUCTOR_CACHE_DIR, and Triton's,
    TRITON_CACHE_DIR) at cache_folder(root), so that a process that builds the same network for the same
    shapes finds its compiled code there instead of compiling it again. Call before compiling (compile_model
    does, with the root given last). Returns the folder."""
    global _cache_root
    _cache_root = Path(root) if root is not None else _cache_root
    folder = cache_folder(_cache_root).resolve()
    (folder / "triton").mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
    return folder


__all__ = ["PATHS", "AutocastNet", "compile_model", "enabled", "make_fast", "swap_modules", "use_compile_cache"]
