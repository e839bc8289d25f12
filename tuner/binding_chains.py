"""``main``'s bindings as a graph, and the rewrite that replaces a chain of them with one value.

The graph passes that turn a chain of Relax ops into one expression (``vendor_kernels``: a
convolution and its epilogue into a vendor call; ``fold_scale_shift``: a convolution and batch
norm's scale and shift into a convolution and a bias) walk the bindings the same way, from a
variable to its one reader, and rewrite the same way: the chain's last binding gets the new
value, and dead-code elimination drops the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.ir import IRModule


def tensor_info(expr: relax.Expr) -> relax.TensorType | None:
    info = expr.ty
    if isinstance(info, relax.TensorType) and info.shape is not None:
        return info
    return None


def op_name(expr: relax.Expr | None) -> str | None:
    """The Relax op ``expr`` calls (``relax.matmul``), if it calls one."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return None


def dtype_of(expr: relax.Expr) -> str | None:
    info = tensor_info(expr)
    return str(info.dtype) if info is not None else None


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """``expr``'s shape, where every dimension is a known integer."""
    info = tensor_info(expr)
    if info is None or not isinstance(info.shape, relax.ShapeExpr):
        return None
    dims = []
    for dim in info.shape.values:
        if not isinstance(dim, tvm.tirx.IntImm):
            return None
        dims.append(int(dim))
    return tuple(dims)


@dataclass(frozen=True)
class BindingGraph:
    """The variable bindings of a function's body, who reads each, and how often."""

    values: dict[relax.Var, relax.Expr]
    readers: dict[relax.Var, list[relax.Var]]
    """The bindings whose call takes the variable as an argument."""
    uses: Counter[relax.Var]
    """Every reference to the variable, the function's output included."""

    @classmethod
    def of(cls, function: relax.Function) -> BindingGraph:
        values: dict[relax.Var, relax.Expr] = {}
        readers: dict[relax.Var, list[relax.Var]] = {}
        uses: Counter[relax.Var] = Counter()

        def count(expr: relax.Expr) -> None:
            if isinstance(expr, relax.Var):
                uses[expr] += 1

        body = function.body
        if isinstance(body, relax.SeqExpr):
            relax.analysis.post_order_visit(body, count)
            for block in body.blocks:
                for binding in block.bindings:
                    if not isinstance(binding, relax.VarBinding):
                        continue
                    values[binding.var] = binding.value
                    if isinstance(binding.value, relax.Call):
                        for arg in binding.value.args:
                            if isinstance(arg, relax.Var):
                                readers.setdefault(arg, []).append(binding.var)
        return cls(values, readers, uses)

    def sole_reader(self, var: relax.Var, taken: Collection[relax.Var] = ()) -> relax.Var | None:
        """The one binding that reads ``var``, where nothing else does and it is not ``taken``."""
        found = self.readers.get(var, [])
        if self.uses[var] != 1 or len(found) != 1 or found[0] in taken:
            return None
        return found[0]


ChainValue = Callable[[relax.BlockBuilder, Callable[[relax.Expr], relax.Expr]], relax.Expr]
"""The new value of a chain's last binding, given the block builder (to emit what it needs
first) and the mutator's ``visit_expr`` (for the chain's inputs, which may be rewritten too)."""


def replace_chains(mod: IRModule, chains: dict[relax.Var, ChainValue]) -> IRModule:
    """``mod`` with each variable of ``chains`` in ``main`` bound to its new value, and the
    bindings nothing reads any more removed."""
    if not chains:
        return mod
    mod = _ChainRewriter(mod, chains).rewrite_main()
    return relax.transform.DeadCodeElimination()(mod)


@relax.expr_functor.mutator
class _ChainRewriter(relax.PyExprMutator):  # type: ignore[misc]
    def __init__(self, mod: IRModule, chains: dict[relax.Var, ChainValue]) -> None:
        super().__init__(mod)
        self.chains = chains

    def rewrite_main(self) -> IRModule:
        main = self.builder_.get().get_global_var("main")
        self.builder_.update_func(main, self.visit_expr(self.builder_.get()[main]))
        return self.builder_.get()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        make = self.chains.get(binding.var)
        if make is None:
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(make(self.builder_, self.visit_expr))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))
