"""The binding graph the chain rewrites walk, and the rewrite itself."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tunefarm.tuner.binding_chains import BindingGraph, replace_chains, static_shape


def _function() -> tuple[relax.Function, list[relax.Var]]:
    """a = x + 1; b = relu(a); c = b * b; out = c + a"""
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    one = relax.const(np.ones((2, 3), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            a = builder.emit(relax.op.add(x, one))
            b = builder.emit(relax.op.nn.relu(a))
            c = builder.emit(relax.op.multiply(b, b))
            out = builder.emit_output(relax.op.add(c, a))
        builder.emit_func_output(out)
    mod = builder.get()
    return mod["main"], [a, b, c, out]


def test_a_sole_reader_is_the_one_binding_that_reads_a_variable_once() -> None:
    function, (a, b, c, out) = _function()
    graph = BindingGraph.of(function)
    assert graph.sole_reader(a) is None  # read by relu and by the last add
    assert graph.sole_reader(b) is None  # read twice by one multiply
    reader = graph.sole_reader(c)
    assert reader is not None and reader.same_as(out)
    assert graph.sole_reader(c, taken={out}) is None
    assert graph.sole_reader(out) is None  # the function's output
    assert static_shape(c) == (2, 3)


def test_a_replaced_chain_leaves_no_dead_bindings() -> None:
    function, (a, _b, c, _out) = _function()
    mod = tvm.IRModule({"main": function})
    # c = b * b becomes c = a, so relu is read by nothing and must go.
    after = replace_chains(mod, {c: lambda _builder, visit: visit(a)})
    ops = set()
    relax.analysis.post_order_visit(
        after["main"].body,
        lambda e: (
            ops.add(e.op.name)
            if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op)
            else None
        ),
    )
    assert ops == {"relax.add"}
