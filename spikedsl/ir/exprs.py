"""Expression utilities over ``ir.Expr``: names, substitution, evaluation,
SymPy conversion and a base printer that every target subclasses.

Only whitelisted functions exist (docs/language.md), so printed code contains nothing
but validated identifiers, numbers and the printer's own function names.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from spikedsl import ir

# name -> number of positional arguments (None: 2 or more)
FUNCTIONS: dict[str, int | None] = {
    "exp": 1, "log": 1, "sqrt": 1, "abs": 1, "tanh": 1, "sigmoid": 1, "relu": 1,
    "sin": 1, "cos": 1, "min": 2, "max": 2, "clip": 3, "where": 3,
}


def num(v: float) -> ir.Num:
    return ir.Num(value=float(v), text=repr(float(v)))


def names(e: ir.Expr) -> set[str]:
    """Free identifiers of an expression (function names excluded)."""
    out: set[str] = set()

    def walk(x):
        if isinstance(x, ir.Name):
            out.add(x.id)
        elif isinstance(x, ir.BinOp | ir.Compare | ir.BoolOp):
            walk(x.left)
            walk(x.right)
        elif isinstance(x, ir.Neg | ir.Not):
            walk(x.operand)
        elif isinstance(x, ir.Call):
            for a in x.args:
                walk(a)
            for k in x.kwargs:
                walk(k.value)
        elif isinstance(x, ir.ListExpr):
            for a in x.items:
                walk(a)

    walk(e)
    return out


def substitute(e: ir.Expr, mapping: dict[str, ir.Expr]) -> ir.Expr:
    """Replace names by expressions (locations kept on untouched nodes)."""
    if isinstance(e, ir.Name):
        return mapping.get(e.id, e)
    if isinstance(e, ir.BinOp | ir.Compare | ir.BoolOp):
        return e.model_copy(update={"left": substitute(e.left, mapping),
                                    "right": substitute(e.right, mapping)})
    if isinstance(e, ir.Neg | ir.Not):
        return e.model_copy(update={"operand": substitute(e.operand, mapping)})
    if isinstance(e, ir.Call):
        return e.model_copy(update={
            "args": tuple(substitute(a, mapping) for a in e.args),
            "kwargs": tuple(k.model_copy(update={"value": substitute(k.value, mapping)})
                            for k in e.kwargs)})
    return e


def add(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="+", left=a, right=b)


def sub(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="-", left=a, right=b)


def mul(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="*", left=a, right=b)


def div(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="/", left=a, right=b)


# ------------------------------------------------------------------ evaluation
def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


_PYFUNCS: dict[str, Callable] = {
    "exp": math.exp, "log": math.log, "sqrt": math.sqrt, "abs": abs, "tanh": math.tanh,
    "sigmoid": _sigmoid, "relu": lambda x: max(x, 0.0), "sin": math.sin, "cos": math.cos,
    "min": min, "max": max, "clip": lambda x, lo, hi: min(max(x, lo), hi),
    "where": lambda c, a, b: a if c else b,
}


class EvalError(ValueError):
    pass


def evaluate(e: ir.Expr, env: dict[str, float]) -> float:
    """Evaluate a scalar expression (used for parameters, initial values)."""
    if isinstance(e, ir.Num):
        return e.value
    if isinstance(e, ir.Name):
        if e.id not in env:
            raise EvalError(f"undefined name '{e.id}'")
        return env[e.id]
    if isinstance(e, ir.Neg):
        return -evaluate(e.operand, env)
    if isinstance(e, ir.Not):
        return float(not evaluate(e.operand, env))
    if isinstance(e, ir.BinOp):
        a, b = evaluate(e.left, env), evaluate(e.right, env)
        try:
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if e.op == "*":
                return a * b
            if e.op == "/":
                return a / b
            return float(a**b)
        except (ZeroDivisionError, OverflowError, TypeError) as exc:
            raise EvalError(str(exc)) from None
    if isinstance(e, ir.Compare):
        a, b = evaluate(e.left, env), evaluate(e.right, env)
        return float({">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b,
                      "==": a == b, "!=": a != b}[e.op])
    if isinstance(e, ir.BoolOp):
        a, b = evaluate(e.left, env), evaluate(e.right, env)
        return float((a and b) if e.op == "and" else (a or b))
    if isinstance(e, ir.Call) and e.func in _PYFUNCS and not e.kwargs:
        try:
            return float(_PYFUNCS[e.func](*[evaluate(a, env) for a in e.args]))
        except (ValueError, OverflowError, TypeError) as exc:
            raise EvalError(str(exc)) from None
    raise EvalError("not a numeric expression")


# ------------------------------------------------------------------ printing
class Printer:
    """Prints an expression as source code.  Targets subclass and fill the
    tables; the structure (precedence, parentheses) is shared."""

    FUNCS: dict[str, str] = {f: f for f in FUNCTIONS}
    POW = "**"
    AND = "and"
    OR = "or"
    NOT = "not "

    def __init__(self, rename: Callable[[str], str] | None = None):
        self.rename = rename or (lambda n: n)

    # precedence: higher binds tighter
    _PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6,
             "neg": 7, "**": 8}

    def number(self, v: float) -> str:
        if v == int(v) and abs(v) < 1e15:
            return repr(float(v))
        return repr(float(v))

    def name(self, n: str) -> str:
        return self.rename(n)

    def call(self, func: str, args: list[str]) -> str:
        return f"{self.FUNCS[func]}({', '.join(args)})"

    def boolop(self, op: str, a: str, b: str) -> str:
        return f"{a} {self.AND if op == 'and' else self.OR} {b}"

    def compare(self, op: str, a: str, b: str) -> str:
        return f"{a} {op} {b}"

    def not_(self, a: str) -> str:
        return f"{self.NOT}{a}"

    def power(self, a: str, b: str) -> str:
        return f"{a}{self.POW}{b}"

    def __call__(self, e: ir.Expr) -> str:
        return self.p(e)[0]

    def p(self, e: ir.Expr) -> tuple[str, int]:
        P = self._PREC
        if isinstance(e, ir.Num):
            s = self.number(e.value)
            return (f"({s})", 9) if e.value < 0 else (s, 9)
        if isinstance(e, ir.Name):
            return self.name(e.id), 9
        if isinstance(e, ir.Attr):
            return self.name(f"{e.obj}.{e.attr}"), 9
        if isinstance(e, ir.Neg):
            s, pr = self.p(e.operand)
            return f"-{self.wrap(s, pr, P['neg'] + 1)}", P["neg"]
        if isinstance(e, ir.BinOp):
            pr = P[e.op]
            ls, lp = self.p(e.left)
            rs, rp = self.p(e.right)
            if e.op == "**":
                return self.power(self.wrap(ls, lp, pr + 1), self.wrap(rs, rp, pr)), pr
            rmin = pr + 1 if e.op in "-/" else pr
            if e.op in "+*":
                rmin = pr + 1 if isinstance(e.right, ir.BinOp) and e.right.op in "-/" else pr
            return f"{self.wrap(ls, lp, pr)} {e.op} {self.wrap(rs, rp, rmin)}", pr
        if isinstance(e, ir.Compare):
            ls, lp = self.p(e.left)
            rs, rp = self.p(e.right)
            pr = P["cmp"]
            return self.compare(e.op, self.wrap(ls, lp, pr + 1), self.wrap(rs, rp, pr + 1)), pr
        if isinstance(e, ir.BoolOp):
            pr = P[e.op]
            ls, lp = self.p(e.left)
            rs, rp = self.p(e.right)
            return self.boolop(e.op, self.wrap(ls, lp, pr), self.wrap(rs, rp, pr + 1)), pr
        if isinstance(e, ir.Not):
            s, pr = self.p(e.operand)
            return self.not_(self.wrap(s, pr, P["not"])), P["not"]
        if isinstance(e, ir.Call):
            return self.call(e.func, [self.p(a)[0] for a in e.args]), 9
        raise TypeError(f"cannot print {type(e).__name__}")

    @staticmethod
    def wrap(s: str, pr: int, need: int) -> str:
        return f"({s})" if pr < need else s


class SpkPrinter(Printer):
    """Prints back in .spk syntax (used by ``fmt`` and the NIR importer)."""

    def number(self, v: float) -> str:
        r = repr(float(v))
        r = r.removesuffix(".0")
        return r

    def p(self, e):
        if isinstance(e, ir.Num) and e.unit:
            scale = e.value
            from spikedsl.ir.units import parse_unit

            s, _ = parse_unit(e.unit)
            return f"{self.number(scale / s)} {e.unit}", 9
        if isinstance(e, ir.Str):
            return f'"{e.value}"', 9
        if isinstance(e, ir.ListExpr):
            return "[" + ", ".join(self.p(i)[0] for i in e.items) + "]", 9
        if isinstance(e, ir.Call):
            args = [self.p(a)[0] for a in e.args]
            args += [f"{k.name} = {self.p(k.value)[0]}" for k in e.kwargs]
            return f"{e.func}({', '.join(args)})", 9
        return super().p(e)


# ------------------------------------------------------------------ SymPy
def to_sympy(e: ir.Expr, symbols: dict):
    import sympy as sp

    def rec(x):
        if isinstance(x, ir.Num):
            return sp.Float(x.value) if x.value != int(x.value) else sp.Integer(int(x.value))
        if isinstance(x, ir.Name):
            if x.id not in symbols:
                symbols[x.id] = sp.Symbol(x.id, real=True)
            return symbols[x.id]
        if isinstance(x, ir.Neg):
            return -rec(x.operand)
        if isinstance(x, ir.BinOp):
            a, b = rec(x.left), rec(x.right)
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b, "**": lambda: a**b}[x.op]()
        if isinstance(x, ir.Call):
            args = [rec(a) for a in x.args]
            if x.func == "exp":
                return sp.exp(args[0])
            if x.func == "log":
                return sp.log(args[0])
            if x.func == "sqrt":
                return sp.sqrt(args[0])
            if x.func in ("sin", "cos", "tanh"):
                return getattr(sp, x.func)(args[0])
            return sp.Function(f"_f_{x.func}")(*args)
        # comparisons / booleans inside ODEs: opaque functions of their arguments
        if isinstance(x, ir.Compare | ir.BoolOp):
            return sp.Function(f"_c_{type(x).__name__}")(rec(x.left), rec(x.right))
        if isinstance(x, ir.Not):
            return sp.Function("_c_not")(rec(x.operand))
        raise TypeError(type(x).__name__)

    return rec(e)


def from_sympy(s) -> ir.Expr:
    """SymPy expression (built from :func:`to_sympy` names) -> ir.Expr."""
    import sympy as sp

    if s.is_Symbol:
        return ir.Name(id=s.name)
    if s.is_Integer or s.is_Float or s.is_Rational:
        v = float(s)
        return num(v) if v >= 0 else ir.Neg(operand=num(-v))
    if s.is_Add:
        terms = list(s.as_ordered_terms())
        out = from_sympy(terms[0])
        for t in terms[1:]:
            c, rest = t.as_coeff_Mul()
            if c < 0:
                out = sub(out, from_sympy(-t))
            else:
                out = add(out, from_sympy(t))
        return out
    if s.is_Mul:
        c, rest = s.as_coeff_Mul()
        if c < 0:
            return ir.Neg(operand=from_sympy(-s))
        num_, den = sp.fraction(s)
        if den != 1:
            return div(from_sympy(num_), from_sympy(den))
        factors = list(s.as_ordered_factors())
        out = from_sympy(factors[0])
        for f in factors[1:]:
            out = mul(out, from_sympy(f))
        return out
    if s.is_Pow:
        b, e = s.args
        if e == -1:
            return div(num(1.0), from_sympy(b))
        if e.is_Number and e < 0:
            return div(num(1.0), from_sympy(b ** (-e)))
        if e == sp.Rational(1, 2):
            return ir.Call(func="sqrt", args=(from_sympy(b),))
        return ir.BinOp(op="**", left=from_sympy(b), right=from_sympy(e))
    if isinstance(s, sp.exp):
        return ir.Call(func="exp", args=(from_sympy(s.args[0]),))
    if isinstance(s, sp.log):
        return ir.Call(func="log", args=(from_sympy(s.args[0]),))
    if isinstance(s, sp.sin | sp.cos | sp.tanh):
        return ir.Call(func=type(s).__name__, args=(from_sympy(s.args[0]),))
    if isinstance(s, sp.core.function.AppliedUndef):
        n = type(s).__name__
        if n.startswith("_f_"):
            return ir.Call(func=n[3:], args=tuple(from_sympy(a) for a in s.args))
        if n == "_c_Compare" or n == "_c_BoolOp" or n == "_c_not":
            raise TypeError("boolean expressions are not converted back")
    raise TypeError(f"cannot convert {s!r}")
