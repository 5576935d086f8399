"""The package's custom ops under torch.compile: declared to Inductor before compiling (nets/inductor_ops.py), so
that Inductor never formats a deep graph's arguments to create an implicit fallback (which did not finish for
DDPM++'s sampling path on PyTorch 2.11), with the layout constraint the implicit fallback would have given, and
the compiled U-Net's values."""
from __future__ import annotations

import pytest
import torch
from kernel_helpers import run_check

pytest.importorskip("triton")


def test_declare_registers_every_op_with_the_implicit_constraint():
    from torch._inductor import lowering

    from diffrepro.nets import inductor_ops
    inductor_ops.declare()
    ops = inductor_ops.ops()
    names = {op.name() for op in ops}
    assert {"diffrepro::gn_act", "diffrepro::skip_residual", "diffrepro::norm_apply_pool",
            "diffrepro::act_conv3x3"} <= names, names
    for op in ops:
        assert op in lowering.lowerings, op
        assert lowering.maybe_layout_constraints(op) is inductor_ops.implicit_constraint(op), op
    assert inductor_ops.declare() == []                 # a second call declares nothing


def _assert_compiled(results):
    # the control: an op compiled before declare() is met (so the check sees implicit fallbacks)
    assert results["control met"] == ["diffrepro.channel_moments.default"], results
    # after make_fast: none met, and the compiled code calls the sampling path's ops
    assert results["unet met"] == [], results
    assert {"act_conv3x3", "norm_apply_pool", "norm_scale_shift", "skip_residual", "gn_act_parts"} <= set(
        results["unet calls"]), results
    assert results["y"] < 1e-5, results


@pytest.mark.integration
def test_compiled_unet_meets_no_undeclared_op():
    _assert_compiled(run_check("inductor_ops_check.py"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_unet_meets_no_undeclared_op_cuda():
    _assert_compiled(run_check("inductor_ops_check.py", "--cuda"))


def test_declare_warns_where_inductor_internals_are_missing(monkeypatch):
    from diffrepro.nets import inductor_ops

    def missing():
        raise AttributeError("module 'torch._C' has no attribute '_dispatch_get_all_op_names'")
    monkeypatch.setattr(inductor_ops, "ops", missing)
    with pytest.warns(RuntimeWarning, match="not declared"):
        assert inductor_ops.declare() == []
