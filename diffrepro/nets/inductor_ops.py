"""The package's custom ops (Triton kernels behind torch.library.custom_op) declared to torch.compile's
Inductor as fallback kernels, i.e. called as they are, before the first compilation.

Inductor declares such an op itself the first time it meets it in a graph, with the op's default layout
constraint. PyTorch 2.11 first formats the call's arguments for a log line, whether the line is logged or
not, and each argument's text holds the kernel that made it, whose text holds its own inputs', down to
the graph's inputs, the shared ones again on every path. Where custom ops feed each other through a deep
network (the U-Net's sampling path: moments, norms, skip products, the output layer), the text grows
exponentially with depth: torch.compile of DDPM++ with the split norm never finished on an H100, and died
of a segmentation fault when its stack was sampled. Declared up front, each op takes the same fallback
with the same layout constraint, and that text is never written.

declare() is called by inference.make_fast and the trainer before torch.compile; it imports Inductor
(a few seconds), so it is not done on import.
"""
from __future__ import annotations

import warnings

import torch

NAMESPACE = "diffrepro"


def ops() -> list:
    """Every operator registered under the package's namespace (those of the modules imported so far)."""
    names = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith(NAMESPACE + "::"))
    return [getattr(getattr(torch.ops, NAMESPACE), n.split("::", 1)[1]).default for n in names]


def implicit_constraint(op):
    """The layout constraint that Inductor's implicit fallback would give `op` (its tag, or the default for
    custom ops, config.custom_op_default_layout_constraint)."""
    from torch._inductor import lowering
    from torch._library.utils import get_layout_constraint_tag
    return lowering.tag_to_layout_constraint(get_layout_constraint_tag(op, with_default=True))


def declare() -> list:
    """Declare every op of the namespace not yet known to Inductor as a fallback kernel; returns those
    declared now. These are Inductor's internals: where a PyTorch version lacks them, this warns and leaves
    each op to Inductor's own (implicit) declaration."""
    from . import conv_parts, fused_norm, norm_split, out_head, skip_matmul  # noqa: F401  (each registers its ops)
    declared = []
    try:
        from torch._inductor import lowering
        for op in ops():
            if op not in lowering.lowerings:
                lowering.make_fallback(op, layout_constraint=implicit_constraint(op), warn=False)
                declared.append(op)
    except (ImportError, AttributeError, TypeError) as e:
        warnings.warn(f"custom ops not declared to torch.compile's Inductor ({e!r}); compiling a deep U-Net on "
                      "PyTorch 2.11 may then take very long", RuntimeWarning)
    return declared
