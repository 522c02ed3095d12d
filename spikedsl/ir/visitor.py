"""One walker over ``ir.Expr``: :class:`ExprVisitor` dispatches on the node's
``kind`` (``num``, ``name``, ``attr``, ``str``, ``bin``, ``neg``, ``cmp``,
``bool``, ``not``, ``call``, ``list``) to ``visit_<kind>``.  Every printer and
evaluator of expressions subclasses it; a node kind a visitor does not handle
raises ``TypeError`` naming the visitor and the node.

:class:`ExprTransformer` is the visitor that rebuilds an expression: each
method returns the node with its children transformed, so a subclass
overrides only the kinds it changes.
"""

from __future__ import annotations

import operator
from typing import Any, Generic, TypeVar

from spikedsl import ir

T = TypeVar("T")

KINDS = ("num", "name", "attr", "str", "bin", "neg", "cmp", "bool", "not", "call", "list")

#: ``bin`` and ``cmp`` operators as Python operators (floats, arrays, tensors, SymPy)
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
             "**": operator.pow}
COMPARISONS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
               "==": operator.eq, "!=": operator.ne}


class ExprVisitor(Generic[T]):
    """Dispatch on ``e.kind``; extra positional arguments are passed through."""

    def visit(self, e: ir.Expr, *args: Any) -> T:
        try:
            method = getattr(self, _METHOD[e.kind])
        except (AttributeError, KeyError):
            raise TypeError(f"{type(self).__name__} cannot handle {type(e).__name__}") from None
        return method(e, *args)

    def unsupported(self, e: ir.Expr, *args: Any) -> T:
        raise TypeError(f"{type(self).__name__} cannot handle {type(e).__name__}")

    visit_num = visit_name = visit_attr = visit_str = visit_bin = visit_neg = unsupported
    visit_cmp = visit_bool = visit_not = visit_call = visit_list = unsupported


_METHOD = {k: f"visit_{k}" for k in KINDS}


def children(e: ir.Expr) -> tuple[ir.Expr, ...]:
    """The sub-expressions of ``e`` (call arguments, then keyword values)."""
    if isinstance(e, ir.Binary):
        return (e.left, e.right)
    if isinstance(e, ir.Unary):
        return (e.operand,)
    if isinstance(e, ir.Call):
        return tuple(e.args) + tuple(k.value for k in e.kwargs)
    if isinstance(e, ir.ListExpr):
        return tuple(e.items)
    return ()


class ExprTransformer(ExprVisitor[ir.Expr]):
    """Rebuilds an expression bottom-up (locations kept on every node)."""

    def leaf(self, e: ir.Expr) -> ir.Expr:
        return e

    visit_num = visit_name = visit_attr = visit_str = leaf

    def visit_bin(self, e: ir.BinOp) -> ir.Expr:
        return e.model_copy(update={"left": self.visit(e.left), "right": self.visit(e.right)})

    visit_cmp = visit_bool = visit_bin

    def visit_neg(self, e: ir.Neg) -> ir.Expr:
        return e.model_copy(update={"operand": self.visit(e.operand)})

    visit_not = visit_neg

    def visit_call(self, e: ir.Call) -> ir.Expr:
        return e.model_copy(update={
            "args": tuple(self.visit(a) for a in e.args),
            "kwargs": tuple(k.model_copy(update={"value": self.visit(k.value)})
                            for k in e.kwargs)})

    def visit_list(self, e: ir.ListExpr) -> ir.Expr:
        return e.model_copy(update={"items": tuple(self.visit(i) for i in e.items)})
