"""Expression utilities over ``ir.Expr``: names, substitution, evaluation,
SymPy conversion and a base printer that every target subclasses.

Every walker here is an :class:`~spikedsl.ir.visitor.ExprVisitor` and reads
the builtin functions from the one table, :mod:`spikedsl.ir.functions`, so
printed code contains nothing but validated identifiers, numbers and the
table's own function names.
"""

from __future__ import annotations

from collections.abc import Callable

from spikedsl import ir
from spikedsl.ir.functions import FUNCTIONS, num
from spikedsl.ir.visitor import COMPARISONS, OPERATORS, ExprTransformer, ExprVisitor, children

__all__ = [
    "FUNCTIONS",
    "EvalError",
    "Printer",
    "SpkPrinter",
    "add",
    "div",
    "evaluate",
    "from_sympy",
    "mul",
    "names",
    "num",
    "split_reads",
    "sub",
    "substitute",
    "to_sympy",
]


def names(e: ir.Expr) -> set[str]:
    """Free identifiers of an expression (function names excluded)."""
    out: set[str] = set()
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, ir.Name):
            out.add(x.id)
        else:
            stack.extend(children(x))
    return out


def split_reads(e: ir.Expr) -> tuple[set[str], set[str]]:
    """``(differentiable, steering)``: the identifiers ``e`` reads where a
    gradient flows through them, and those it reads only inside a condition
    (a comparison, ``and`` / ``or`` / ``not``, the first argument of
    ``where``), whose gradient is 0."""
    diff: set[str] = set()
    steer: set[str] = set()
    stack = [(e, False)]
    while stack:
        x, cond = stack.pop()
        if isinstance(x, ir.Name):
            (steer if cond else diff).add(x.id)
            continue
        cond = cond or isinstance(x, ir.Compare | ir.BoolOp | ir.Not)
        subs = children(x)
        if isinstance(x, ir.Call) and x.func == "where" and subs:
            stack.append((subs[0], True))
            subs = subs[1:]
        stack.extend((c, cond) for c in subs)
    return diff, steer


class _Substitute(ExprTransformer):
    def __init__(self, mapping: dict[str, ir.Expr]):
        self.mapping = mapping

    def visit_name(self, e: ir.Name) -> ir.Expr:
        return self.mapping.get(e.id, e)


def substitute(e: ir.Expr, mapping: dict[str, ir.Expr]) -> ir.Expr:
    """Replace names by expressions (locations kept on untouched nodes)."""
    return _Substitute(mapping).visit(e)


def add(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="+", left=a, right=b)


def sub(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="-", left=a, right=b)


def mul(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="*", left=a, right=b)


def div(a: ir.Expr, b: ir.Expr) -> ir.Expr:
    return ir.BinOp(op="/", left=a, right=b)


# ------------------------------------------------------------------ evaluation
class EvalError(ValueError):
    pass


class ScalarEvaluator(ExprVisitor[float]):
    """The value of an expression on Python floats (``FUNCTIONS[f].py``)."""

    def __init__(self, env: dict[str, float]):
        self.env = env

    def visit_num(self, e: ir.Num) -> float:
        return e.value

    def visit_name(self, e: ir.Name) -> float:
        if e.id not in self.env:
            raise EvalError(f"undefined name '{e.id}'")
        return self.env[e.id]

    def visit_neg(self, e: ir.Neg) -> float:
        return -self.visit(e.operand)

    def visit_not(self, e: ir.Not) -> float:
        return float(not self.visit(e.operand))

    def visit_bin(self, e: ir.BinOp) -> float:
        a, b = self.visit(e.left), self.visit(e.right)
        try:
            return float(OPERATORS[e.op](a, b))
        except (ZeroDivisionError, OverflowError, TypeError) as exc:
            raise EvalError(str(exc)) from None

    def visit_cmp(self, e: ir.Compare) -> float:
        return float(COMPARISONS[e.op](self.visit(e.left), self.visit(e.right)))

    def visit_bool(self, e: ir.BoolOp) -> float:
        a, b = self.visit(e.left), self.visit(e.right)
        return float((a and b) if e.op == "and" else (a or b))

    def visit_call(self, e: ir.Call) -> float:
        f = FUNCTIONS.get(e.func)
        if f is None or e.kwargs:
            return self.unsupported(e)
        args = [self.visit(a) for a in e.args]
        try:
            return float(f.py(*args))
        except (ValueError, OverflowError, TypeError, ZeroDivisionError) as exc:
            raise EvalError(str(exc)) from None

    def unsupported(self, e: ir.Expr) -> float:
        raise EvalError("not a numeric expression")

    visit_attr = visit_str = visit_list = unsupported


def evaluate(e: ir.Expr, env: dict[str, float]) -> float:
    """Evaluate a scalar expression (used for parameters, initial values)."""
    return ScalarEvaluator(env).visit(e)


# ------------------------------------------------------------------ printing
class Printer(ExprVisitor[tuple[str, int]]):
    """Prints an expression as source code: ``visit`` (or ``p``) returns
    (text, precedence).  Targets subclass it; the structure (precedence,
    parentheses) is shared, calls print with the language's function names."""

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
        return repr(float(v))

    def name(self, n: str) -> str:
        return self.rename(n)

    def call(self, func: str, args: list[str]) -> str:
        if func not in FUNCTIONS:
            raise TypeError(f"unknown function {func!r}")
        return f"{func}({', '.join(args)})"

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
        return self.visit(e)

    def visit_num(self, e: ir.Num) -> tuple[str, int]:
        s = self.number(e.value)
        return (f"({s})", 9) if e.value < 0 else (s, 9)

    def visit_name(self, e: ir.Name) -> tuple[str, int]:
        return self.name(e.id), 9

    def visit_attr(self, e: ir.Attr) -> tuple[str, int]:
        return self.name(f"{e.obj}.{e.attr}"), 9

    def visit_neg(self, e: ir.Neg) -> tuple[str, int]:
        s, pr = self.p(e.operand)
        return f"-{self.wrap(s, pr, self._PREC['neg'] + 1)}", self._PREC["neg"]

    def visit_bin(self, e: ir.BinOp) -> tuple[str, int]:
        pr = self._PREC[e.op]
        ls, lp = self.p(e.left)
        rs, rp = self.p(e.right)
        if e.op == "**":
            return self.power(self.wrap(ls, lp, pr + 1), self.wrap(rs, rp, pr)), pr
        rmin = pr + 1 if e.op in "-/" else pr
        if e.op in "+*":
            rmin = pr + 1 if isinstance(e.right, ir.BinOp) and e.right.op in "-/" else pr
        return f"{self.wrap(ls, lp, pr)} {e.op} {self.wrap(rs, rp, rmin)}", pr

    def visit_cmp(self, e: ir.Compare) -> tuple[str, int]:
        ls, lp = self.p(e.left)
        rs, rp = self.p(e.right)
        pr = self._PREC["cmp"]
        return self.compare(e.op, self.wrap(ls, lp, pr + 1), self.wrap(rs, rp, pr + 1)), pr

    def visit_bool(self, e: ir.BoolOp) -> tuple[str, int]:
        pr = self._PREC[e.op]
        ls, lp = self.p(e.left)
        rs, rp = self.p(e.right)
        return self.boolop(e.op, self.wrap(ls, lp, pr), self.wrap(rs, rp, pr + 1)), pr

    def visit_not(self, e: ir.Not) -> tuple[str, int]:
        s, pr = self.p(e.operand)
        return self.not_(self.wrap(s, pr, self._PREC["not"])), self._PREC["not"]

    def visit_call(self, e: ir.Call) -> tuple[str, int]:
        return self.call(e.func, [self.p(a)[0] for a in e.args]), 9

    def unsupported(self, e: ir.Expr, *args) -> tuple[str, int]:
        raise TypeError(f"cannot print {type(e).__name__}")

    visit_str = visit_list = unsupported

    @staticmethod
    def wrap(s: str, pr: int, need: int) -> str:
        return f"({s})" if pr < need else s


class SpkPrinter(Printer):
    """Prints back in .spk syntax (used by ``fmt`` and the NIR importer)."""

    def number(self, v: float) -> str:
        r = repr(float(v))
        r = r.removesuffix(".0")
        return r

    def visit_num(self, e: ir.Num) -> tuple[str, int]:
        if e.unit:
            from spikedsl.ir.units import parse_unit

            s, _ = parse_unit(e.unit)
            return f"{self.number(e.value / s)} {e.unit}", 9
        return super().visit_num(e)

    def visit_str(self, e: ir.Str) -> tuple[str, int]:
        return f'"{e.value}"', 9

    def visit_list(self, e: ir.ListExpr) -> tuple[str, int]:
        return "[" + ", ".join(self.p(i)[0] for i in e.items) + "]", 9

    def visit_call(self, e: ir.Call) -> tuple[str, int]:
        args = [self.p(a)[0] for a in e.args]
        args += [f"{k.name} = {self.p(k.value)[0]}" for k in e.kwargs]
        return f"{e.func}({', '.join(args)})", 9


# ------------------------------------------------------------------ SymPy
class SympyBuilder(ExprVisitor):
    """IR -> SymPy for lowering.  The table's ``native`` functions become
    SymPy's own (``exp``, ``Abs``, ...); the others, comparisons and booleans
    stay opaque functions of their arguments (``_f_relu``, ``_c_Compare``)."""

    def __init__(self, symbols: dict):
        import sympy as sp

        self.sp = sp
        self.symbols = symbols

    def visit_num(self, e: ir.Num):
        v = e.value
        return self.sp.Float(v) if v != int(v) else self.sp.Integer(int(v))

    def visit_name(self, e: ir.Name):
        if e.id not in self.symbols:
            self.symbols[e.id] = self.sp.Symbol(e.id, real=True)
        return self.symbols[e.id]

    def visit_neg(self, e: ir.Neg):
        return -self.visit(e.operand)

    def visit_bin(self, e: ir.BinOp):
        return OPERATORS[e.op](self.visit(e.left), self.visit(e.right))

    def visit_call(self, e: ir.Call):
        args = [self.visit(a) for a in e.args]
        f = FUNCTIONS.get(e.func)
        if f is not None and f.native:
            return f.sympy(*args)
        return self.sp.Function(f"_f_{e.func}")(*args)

    def visit_cmp(self, e):
        return self.sp.Function(f"_c_{type(e).__name__}")(self.visit(e.left), self.visit(e.right))

    visit_bool = visit_cmp

    def visit_not(self, e: ir.Not):
        return self.sp.Function("_c_not")(self.visit(e.operand))


def to_sympy(e: ir.Expr, symbols: dict):
    return SympyBuilder(symbols).visit(e)


_NATIVE: dict = {}


def _native_of(s) -> str | None:
    """The table's function whose SymPy form is ``s`` (sqrt is a power)."""
    if not _NATIVE:
        import sympy as sp

        x = sp.Symbol("x", real=True)
        for f in FUNCTIONS.values():
            if f.native and f.arity == 1:
                probe = f.sympy(x)
                if not probe.is_Pow:
                    _NATIVE[probe.func] = f.name
    return _NATIVE.get(s.func)


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
    fname = _native_of(s)
    if fname is not None:
        return ir.Call(func=fname, args=tuple(from_sympy(a) for a in s.args))
    if isinstance(s, sp.core.function.AppliedUndef):
        n = type(s).__name__
        if n.startswith("_f_"):
            return ir.Call(func=n[3:], args=tuple(from_sympy(a) for a in s.args))
        if n == "_c_Compare" or n == "_c_BoolOp" or n == "_c_not":
            raise TypeError("boolean expressions are not converted back")
    raise TypeError(f"cannot convert {s!r}")
