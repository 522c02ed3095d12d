"""Elementwise evaluation of ``ir.Expr`` over arrays, with numpy or torch.

:func:`compile_expr` walks the tree once and returns a function of the
environment; each node becomes a small closure, so a step costs one array
call per operator.  Functions come from the table (``FUNCTIONS[f].np`` or
``.torch_fn(torch)``); comparisons and booleans give 0.0 / 1.0 in the float
dtype.  With numpy, call the result inside ``np.errstate(all="ignore")``
(x/0 gives inf/nan, as torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from spikedsl import ir
from spikedsl.ir.exprs import names
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.visitor import COMPARISONS, OPERATORS, ExprVisitor

Compiled = Callable[[Mapping[str, object]], object]

_NP_BIN = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "**": np.power}
_NP_CMP = {">=": np.greater_equal, "<=": np.less_equal, ">": np.greater, "<": np.less,
           "==": np.equal, "!=": np.not_equal}


class ArrayCompiler(ExprVisitor[Compiled]):
    """``xp``: ``numpy`` (default) or the ``torch`` module; ``dtype`` the
    float dtype (a numpy type, or a torch dtype; a numpy type is mapped to
    torch's).  Subexpressions that only read names of ``const`` (parameters,
    ``dt``) are evaluated once, at compile time."""

    def __init__(self, dtype=np.float64, const: Mapping[str, object] | None = None, xp=None,
                 device=None):
        self.xp = np if xp is None else xp
        self.torch = self.xp is not np
        self.device = device
        if self.torch and not isinstance(dtype, self.xp.dtype):
            dtype = getattr(self.xp, np.dtype(dtype).name)
        self.dtype = dtype
        self.const = const

    # ---------------------------------------------------------------- helpers
    def _t(self, v):
        """A torch tensor of ``v`` (floats become tensors of the dtype)."""
        return v if isinstance(v, self.xp.Tensor) else self.xp.as_tensor(
            v, dtype=self.dtype, device=self.device)

    def compile(self, e: ir.Expr) -> Compiled:
        const = self.const
        if const and not isinstance(e, ir.Num | ir.Name) and names(e) <= set(const):
            inner = ArrayCompiler(self.dtype, None, self.xp, self.device).compile(e)
            if self.torch:
                c = inner(const)
            else:
                with np.errstate(all="ignore"):
                    c = inner(const)
            return lambda env: c
        return self.visit(e)

    # ---------------------------------------------------------------- nodes
    def visit_num(self, e: ir.Num) -> Compiled:
        c = self.xp.tensor(e.value, dtype=self.dtype, device=self.device) if self.torch else \
            self.dtype(e.value)
        return lambda env: c

    def visit_name(self, e: ir.Name) -> Compiled:
        name = e.id

        def get(env):
            try:
                return env[name]
            except KeyError:
                raise KeyError(f"undefined name '{name}' in a lowered expression") from None
        return get

    def visit_neg(self, e: ir.Neg) -> Compiled:
        f = self.compile(e.operand)
        return lambda env: -f(env)

    def visit_bin(self, e: ir.BinOp) -> Compiled:
        fa, fb = self.compile(e.left), self.compile(e.right)
        op = (OPERATORS if self.torch else _NP_BIN)[e.op]
        return lambda env: op(fa(env), fb(env))

    def visit_cmp(self, e: ir.Compare) -> Compiled:
        fa, fb = self.compile(e.left), self.compile(e.right)
        dtype = self.dtype
        if self.torch:
            cmp, t = COMPARISONS[e.op], self._t
            return lambda env: t(cmp(t(fa(env)), t(fb(env)))).to(dtype)
        cmp = _NP_CMP[e.op]
        return lambda env: np.asarray(cmp(fa(env), fb(env)), dtype=dtype)

    def visit_bool(self, e: ir.BoolOp) -> Compiled:
        fa, fb = self.compile(e.left), self.compile(e.right)
        dtype = self.dtype
        if self.torch:
            xp, t = self.xp, self._t
            lop = xp.logical_and if e.op == "and" else xp.logical_or
            return lambda env: lop(t(fa(env)) != 0, t(fb(env)) != 0).to(dtype)
        lop = np.logical_and if e.op == "and" else np.logical_or
        return lambda env: np.asarray(lop(np.asarray(fa(env)) != 0, np.asarray(fb(env)) != 0),
                                      dtype=dtype)

    def visit_not(self, e: ir.Not) -> Compiled:
        f = self.compile(e.operand)
        dtype = self.dtype
        if self.torch:
            t = self._t
            return lambda env: (t(f(env)) == 0).to(dtype)
        return lambda env: np.asarray(np.asarray(f(env)) == 0, dtype=dtype)

    def visit_call(self, e: ir.Call) -> Compiled:
        row = FUNCTIONS.get(e.func)
        if row is None or e.kwargs:
            return self.unsupported(e)
        fs = [self.compile(a) for a in e.args]
        if self.torch:
            fn, t = row.torch_fn(self.xp), self._t
            return lambda env: fn(*[t(f(env)) for f in fs])
        fn = row.np
        if len(fs) == 1:
            f0 = fs[0]
            return lambda env: fn(f0(env))
        return lambda env: fn(*[f(env) for f in fs])

    def unsupported(self, e: ir.Expr, *args) -> Compiled:
        raise TypeError(f"cannot evaluate {type(e).__name__} in a lowered expression")

    visit_attr = visit_str = visit_list = unsupported


def compile_expr(e: ir.Expr, dtype=np.float64, const: Mapping[str, object] | None = None,
                 xp=None) -> Compiled:
    """An IR expression -> a function of the environment (see the module doc)."""
    return ArrayCompiler(dtype, const, xp).compile(e)


def evaluate(e: ir.Expr, env: Mapping[str, object], dtype=np.float64, xp=None):
    """Evaluate an IR expression elementwise (arrays / tensors broadcast)."""
    f = compile_expr(e, dtype, xp=xp)
    if xp is not None and xp is not np:
        return f(env)
    with np.errstate(all="ignore"):
        return f(env)
