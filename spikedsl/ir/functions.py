"""The builtin functions of the language (docs/language.md): one row per function.

Everything that reads a function call reads it here: the checks (arity and
dimension rule), the scalar evaluator (``exprs.evaluate``), the numpy / torch
interpreter (``runtime.reference.compile_expr``), SymPy (lowering and the
torch target's analytic backward, through ``sympy`` and ``grad``) and the
printers of the torch, Norse and Brian2 targets.  Adding a function is one
row of :data:`FUNCTIONS` (its tests in tests/test_functions.py check that
every field is there and that the implementations agree).

Fields of a row (:class:`Function`):

``arity``
    number of positional arguments (no keywords).
``dim``
    dimension rule: ``dimensionless`` (arguments and result have no unit),
    ``same`` (arguments share the first one's dimension, which the result
    keeps; a literal 0 matches anything), ``sqrt`` (half the argument's),
    ``choose`` (``where``: the last two arguments share a dimension).
``py`` / ``np`` / ``torch``
    the value on Python floats, numpy arrays and torch tensors (``torch``
    takes the torch module first: torch is imported only when used).
``sympy``, ``native``
    the exact definition in SymPy.  ``native``: it is SymPy's own function,
    so lowering keeps it symbolic (other functions stay opaque there).
``grad``
    ``grad(args, i, const) -> ir.Expr``: the derivative with respect to
    argument ``i`` as an expression over ``args``; it is the derivative
    torch's autograd computes for the code ``torch`` prints (``const[j]``:
    argument ``j`` is a literal number, printed as a number).
``torch_code``
    the generated torch code: a function name, or ``form(args, dtype)`` for
    a special form (``args``: :class:`CodeArg`; ``dtype``: code of the
    float dtype).  ``torch_helper``: source of module-level functions the
    name needs (included in generated code that uses the name; the
    ``torch`` implementation is then that same source).  ``torch_out``: the
    function takes ``out=``.
``brian2``
    (template, precedence) of Brian2 code.  Fields: ``a0 a1 a2`` the
    arguments, ``w1 w2`` the same wrapped for a product, ``c0`` the first
    argument as a condition, ``zero inf ninf`` in the result's dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from spikedsl import ir

Grad = Callable[[tuple, int, tuple], "ir.Expr"]


class CodeArg:
    """One argument of a printed torch call: ``number`` (the value of a
    literal number, else None) and its code, computed on first use:
    ``text`` (the value), ``tensor`` (a tensor even for a bare number),
    ``cond`` (a bool tensor: the value is nonzero)."""

    def __init__(self, number: float | None, *, text: Callable[[], str],
                 tensor: Callable[[], str], cond: Callable[[], str]):
        self.number = number
        self._make = {"text": text, "tensor": tensor, "cond": cond}
        self._done: dict[str, str] = {}

    def _get(self, what: str) -> str:
        if what not in self._done:
            self._done[what] = self._make[what]()
        return self._done[what]

    @property
    def text(self) -> str:
        return self._get("text")

    @property
    def tensor(self) -> str:
        return self._get("tensor")

    @property
    def cond(self) -> str:
        return self._get("cond")


@dataclass(frozen=True)
class Function:
    name: str
    arity: int
    dim: Literal["dimensionless", "same", "sqrt", "choose"]
    doc: str
    py: Callable[..., float]
    np: Callable[..., Any]
    torch: Callable[..., Any] | None
    sympy: Callable[..., Any]
    native: bool
    grad: Grad
    torch_code: str | Callable[[list[CodeArg], str], str]
    brian2: tuple[str, int]
    torch_out: bool = False
    torch_helper: str = ""

    def torch_fn(self, torch_module) -> Callable[..., Any]:
        """The torch implementation, ``f(*tensors)``."""
        if self.torch_helper:
            fn = _helper(self.torch_helper, torch_module)[self.torch_code]
            return fn
        return lambda *a: self.torch(torch_module, *a)


_HELPERS: dict[str, dict] = {}


def _helper(source: str, torch_module) -> dict:
    """The namespace of a torch helper's source (run once)."""
    if source not in _HELPERS:
        ns: dict = {"torch": torch_module, "math": math}
        exec(compile(source, "<spikedsl torch helper>", "exec"), ns)  # our own table's code
        _HELPERS[source] = ns
    return _HELPERS[source]


# ------------------------------------------------------------------ IR builders
def num(v: float) -> ir.Num:
    return ir.Num(value=float(v), text=repr(float(v)))


def binop(op: str, a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op=op, left=a, right=b)


def compare(op: str, a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.Compare(op=op, left=a, right=b)


def call(name: str, *args: ir.Expr) -> ir.Expr:
    return ir.Call(func=name, args=tuple(args))


_n, _b, _c, _f = num, binop, compare, call


def _horner(x: ir.Expr, coeffs: list[float]) -> ir.Expr:
    out: ir.Expr = _n(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = _b("+", _n(c), _b("*", x, out))
    return out


# ------------------------------------------------------------------ implementations
def _sigmoid_py(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _sigmoid_np(x):
    import numpy as np

    ex = np.exp(-np.abs(x))  # stable for large |x|
    return np.where(x >= 0, 1.0 / (1.0 + ex), ex / (1.0 + ex))


def _np(name: str) -> Callable:
    def f(*a):
        import numpy as np

        return getattr(np, name)(*a)

    f.__name__ = name
    return f


def _clip_np(x, lo, hi):
    import numpy as np

    return np.minimum(np.maximum(x, lo), hi)


def _where_np(c, a, b):
    import numpy as np

    return np.where(np.asarray(c) != 0, a, b)


def _relu_np(x):
    import numpy as np

    return np.maximum(x, 0.0)


def _sp(name: str) -> Callable:
    def f(*a):
        import sympy as sp

        return getattr(sp, name)(*a)

    return f


# exprel(x) = (exp(x) - 1) / x = sum x^n / (n+1)!, 1 at 0 (Brian2's exprel).  The value
# is expm1(x) / x (exact at 0); its derivative (exp(x) - exprel(x)) / x loses digits
# near 0, where it is its Taylor series sum (n+1) x^n / (n+2)! instead (10 terms: the
# error at |x| = 0.1 is below 1e-17, and the formula's is below 1e-14 beyond).
_EXPREL_NEAR = 0.1
_EXPREL_GRAD_SERIES = [(n + 1) / math.factorial(n + 2) for n in range(10)]


def _exprel_py(x: float) -> float:
    return math.expm1(x) / x if x != 0 else 1.0


def _exprel_np(x):
    import numpy as np

    x = np.asarray(x, dtype=float)
    zero = x == 0
    xs = np.where(zero, 1.0, x)
    return np.where(zero, 1.0, np.expm1(xs) / xs)


def _exprel_sympy(x):
    import sympy as sp

    return sp.Piecewise((sp.Integer(1), sp.Eq(x, 0)), ((sp.exp(x) - 1) / x, True))


def _exprel_grad(a, i, const):
    (x,) = a
    series = _horner(x, _EXPREL_GRAD_SERIES)
    far = _b("/", _b("-", _f("exp", x), _f("exprel", x)), x)
    return _f("where", _c("<", _f("abs", x), _n(_EXPREL_NEAR)), series, far)


_EXPREL_TORCH = f'''class _Exprel(torch.autograd.Function):
    """exprel(x) = (exp(x) - 1) / x, 1 at 0 (as Brian2): expm1(x) / x, exact at 0;
    backward (exp(x) - exprel(x)) / x, its Taylor series for |x| < {_EXPREL_NEAR!r}."""

    @staticmethod
    def forward(ctx, x):
        zero = x == 0
        xs = torch.where(zero, torch.ones_like(x), x)
        y = torch.where(zero, torch.ones_like(x), torch.expm1(xs) / xs)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        near = torch.abs(x) < {_EXPREL_NEAR!r}
        xs = torch.where(near, torch.ones_like(x), x)
        series = torch.full_like(x, {_EXPREL_GRAD_SERIES[-1]!r})
        for c in ({", ".join(repr(c) for c in reversed(_EXPREL_GRAD_SERIES[:-1]))}):
            series = series * x + c
        return g * torch.where(near, series, (torch.exp(x) - y) / xs)


_exprel = _Exprel.apply
'''


# ------------------------------------------------------------------ derivatives
def _min_max_grad(strict: str, loose: str) -> Grad:
    """torch.minimum / maximum (ties split the gradient) or, with a number on
    one side, torch.clamp (the tensor side takes it all)."""

    def grad(a, i, const):
        x, o = a[i], a[1 - i]
        if const[1 - i]:
            return _c(loose, x, o)
        if const[i]:
            return _n(0.0)
        return _b("+", _c(strict, x, o), _b("/", _c("==", x, o), _n(2.0)))

    return grad


def _clip_grad(a, i, const):
    """torch.clamp's (with lo > hi the value is hi)."""
    x, lo, hi = a
    if i == 0:
        return _b("*", _c(">=", x, lo), _c("<=", x, hi))
    if const[i]:
        return _n(0.0)
    if i == 1:
        return _b("*", _c("<", x, lo), _c("<", lo, hi))
    return ir.BoolOp(op="or", left=_c(">", x, hi), right=_c("<", hi, lo))


def _where_grad(a, i, const):
    if i == 0:
        return _n(0.0)
    return _f("where", a[0], _n(1.0), _n(0.0)) if i == 1 else _f("where", a[0], _n(0.0), _n(1.0))


# ------------------------------------------------------------------ torch special forms
def _torch_min_max(fn: str, kw: str):
    def form(args: list[CodeArg], dtype: str) -> str:
        a, b = args
        if a.number is not None or b.number is not None:
            x, c = (a, b) if b.number is not None else (b, a)
            return f"torch.clamp({x.text}, {kw}={c.text})"
        return f"{fn}({a.text}, {b.text})"

    return form


def _torch_clip(args: list[CodeArg], dtype: str) -> str:
    x, lo, hi = args
    if lo.number is not None and hi.number is not None:
        return f"torch.clamp({x.tensor}, {lo.text}, {hi.text})"
    return f"torch.clamp({x.tensor}, {lo.tensor}, {hi.tensor})"


def unparen(code: str) -> str:
    """``code`` without one pair of parentheses around all of it (a lone
    argument in parentheses is redundant)."""
    if code.startswith("(") and code.endswith(")"):
        depth = 0
        for i, ch in enumerate(code):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(code) - 1:
                return code
        return code[1:-1]
    return code


def _torch_where(args: list[CodeArg], dtype: str) -> str:
    c, a, b = args
    if a.number == 1 and b.number == 0:
        return f"{c.cond}.to({dtype})"
    if a.number == 0 and b.number == 1:
        return f"torch.logical_not({unparen(c.cond)}).to({dtype})"
    if a.number is not None and b.number is not None:
        cf = f"{c.cond}.to({dtype})"
        return f"({a.text} * {cf} + {b.text} * (1.0 - {cf}))"
    return f"torch.where({c.cond}, {a.text}, {b.text})"


# ------------------------------------------------------------------ the table
_ROWS = [
    Function("exp", 1, "dimensionless", "e to the power x",
             math.exp, _np("exp"), lambda t, x: t.exp(x), _sp("exp"), True,
             lambda a, i, c: _f("exp", a[0]), "torch.exp", ("exp({a0})", 9), torch_out=True),
    Function("log", 1, "dimensionless", "natural logarithm",
             math.log, _np("log"), lambda t, x: t.log(x), _sp("log"), True,
             lambda a, i, c: _b("/", _n(1.0), a[0]), "torch.log", ("log({a0})", 9),
             torch_out=True),
    Function("sqrt", 1, "sqrt", "square root (halves the dimension)",
             math.sqrt, _np("sqrt"), lambda t, x: t.sqrt(x), _sp("sqrt"), True,
             lambda a, i, c: _b("/", _n(0.5), _f("sqrt", a[0])), "torch.sqrt",
             ("sqrt({a0})", 9), torch_out=True),
    Function("abs", 1, "same", "absolute value",
             abs, _np("abs"), lambda t, x: t.abs(x), _sp("Abs"), True,
             lambda a, i, c: _b("-", _c(">", a[0], _n(0.0)), _c("<", a[0], _n(0.0))),
             "torch.abs", ("abs({a0})", 9), torch_out=True),
    Function("tanh", 1, "dimensionless", "hyperbolic tangent",
             math.tanh, _np("tanh"), lambda t, x: t.tanh(x), _sp("tanh"), True,
             lambda a, i, c: _b("-", _n(1.0), _b("**", _f("tanh", a[0]), _n(2.0))),
             "torch.tanh", ("tanh({a0})", 9), torch_out=True),
    Function("sigmoid", 1, "dimensionless", "1 / (1 + exp(-x))",
             _sigmoid_py, _sigmoid_np, lambda t, x: t.sigmoid(x),
             lambda x: 1 / (1 + _sp("exp")(-x)), False,
             lambda a, i, c: _b("*", _f("sigmoid", a[0]), _b("-", _n(1.0), _f("sigmoid", a[0]))),
             "torch.sigmoid", ("1.0/(1.0 + exp(-({a0})))", 6), torch_out=True),
    Function("relu", 1, "same", "max(x, 0)",
             lambda x: max(x, 0.0), _relu_np, lambda t, x: t.relu(x),
             lambda x: _sp("Max")(x, 0), False,
             lambda a, i, c: _c(">", a[0], _n(0.0)), "torch.relu",
             ("clip({a0}, {zero}, {inf})", 9)),
    Function("sin", 1, "dimensionless", "sine",
             math.sin, _np("sin"), lambda t, x: t.sin(x), _sp("sin"), True,
             lambda a, i, c: _f("cos", a[0]), "torch.sin", ("sin({a0})", 9), torch_out=True),
    Function("cos", 1, "dimensionless", "cosine",
             math.cos, _np("cos"), lambda t, x: t.cos(x), _sp("cos"), True,
             lambda a, i, c: ir.Neg(operand=_f("sin", a[0])), "torch.cos", ("cos({a0})", 9),
             torch_out=True),
    Function("min", 2, "same", "the smaller of a and b",
             min, _np("minimum"), lambda t, a, b: t.minimum(a, b), _sp("Min"), False,
             _min_max_grad("<", "<="), _torch_min_max("torch.minimum", "max"),
             ("clip({a0}, {ninf}, {a1})", 9)),
    Function("max", 2, "same", "the larger of a and b",
             max, _np("maximum"), lambda t, a, b: t.maximum(a, b), _sp("Max"), False,
             _min_max_grad(">", ">="), _torch_min_max("torch.maximum", "min"),
             ("clip({a0}, {a1}, {inf})", 9)),
    Function("clip", 3, "same", "min(max(x, lo), hi)",
             lambda x, lo, hi: min(max(x, lo), hi), _clip_np,
             lambda t, x, lo, hi: t.minimum(t.maximum(x, lo), hi),
             lambda x, lo, hi: _sp("Min")(_sp("Max")(x, lo), hi), False,
             _clip_grad, _torch_clip, ("clip({a0}, {a1}, {a2})", 9)),
    Function("where", 3, "choose", "a where cond is nonzero, else b",
             lambda c, a, b: a if c else b, _where_np, lambda t, c, a, b: t.where(c != 0, a, b),
             lambda c, a, b: _sp("Piecewise")((a, _sp("Ne")(c, 0)), (b, True)), False,
             _where_grad, _torch_where, ("{w1}*int({c0}) + {w2}*(1 - int({c0}))", 5)),
    Function("exprel", 1, "dimensionless", "(exp(x) - 1) / x, 1 at x = 0 (as Brian2)",
             _exprel_py, _exprel_np, None, _exprel_sympy, False, _exprel_grad,
             "_exprel", ("exprel({a0})", 9), torch_helper=_EXPREL_TORCH),
]

FUNCTIONS: dict[str, Function] = {f.name: f for f in _ROWS}

__all__ = ["FUNCTIONS", "CodeArg", "Function", "binop", "call", "compare", "num"]
