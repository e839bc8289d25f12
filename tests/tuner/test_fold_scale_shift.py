"""Batch norm as ``torch.export`` leaves it, folded into the convolution before it."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from tunefarm.tuner.fold_scale_shift import fold_scale_shift
from tunefarm.tuner.targets import parse_target

RNG = np.random.default_rng(0)


def _const(*shape: int) -> relax.Constant:
    return relax.const(RNG.standard_normal(shape).astype("float32"))


def _conv_then(
    steps: list[tuple[str, relax.Constant, bool]], *, used_twice: bool = False
) -> IRModule:
    """conv2d (NCHW) followed by ``steps``: (op, constant, the constant on the left)."""
    x = relax.Var("x", relax.TensorType((1, 3, 6, 6), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            value = builder.emit(relax.op.nn.conv2d(x, _const(4, 3, 3, 3), padding=[1, 1]))
            first = value
            for op, constant, on_left in steps:
                args = (constant, value) if on_left else (value, constant)
                value = builder.emit(getattr(relax.op, op)(*args))
            if used_twice:
                value = builder.emit(relax.op.add(value, first))
            out = builder.emit_output(value)
        builder.emit_func_output(out)
    return builder.get()


def _run(mod: IRModule, image: np.ndarray) -> np.ndarray:
    executable = tvm.compile(mod, target=parse_target("llvm"))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(image)).numpy()


def _ops(mod: IRModule) -> list[str]:
    names: list[str] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.append(str(expr.op.name))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return names


def test_batch_norm_after_a_convolution_becomes_its_weight_and_one_bias_add() -> None:
    std = relax.const(RNG.uniform(0.5, 2.0, (1, 4, 1, 1)).astype("float32"))
    before = _conv_then(
        [
            ("subtract", _const(1, 4, 1, 1), False),
            ("divide", std, False),
            ("multiply", _const(4, 1, 1), True),
            ("add", _const(1, 4, 1, 1), False),
        ]
    )
    after = fold_scale_shift(before)
    assert _ops(after) == ["relax.nn.conv2d", "relax.add"]
    image = RNG.standard_normal((1, 3, 6, 6)).astype("float32")
    np.testing.assert_allclose(_run(after, image), _run(before, image), rtol=1e-5, atol=1e-5)


def test_what_varies_along_anything_but_the_channels_stays() -> None:
    along_width = _const(1, 1, 1, 6)
    before = _conv_then([("multiply", along_width, False), ("add", _const(1, 4, 1, 1), False)])
    assert _ops(fold_scale_shift(before)) == ["relax.nn.conv2d", "relax.multiply", "relax.add"]


def test_a_constant_minus_the_convolution_and_a_reused_output_are_left_alone() -> None:
    flipped = _conv_then([("subtract", _const(1, 4, 1, 1), True)])
    assert _ops(fold_scale_shift(flipped)) == _ops(flipped)
    # The convolution's output is read twice: scaling its weight would change the other reader.
    reused = _conv_then([("multiply", _const(1, 4, 1, 1), False)], used_twice=True)
    assert _ops(fold_scale_shift(reused)) == _ops(reused)
