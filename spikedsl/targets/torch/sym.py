"""SymPy side of the torch target: the lowered step as SymPy expressions
(with functions whose derivatives equal torch's autograd formulas) and a
printer back to torch code.  Used to derive the analytic backward pass of the
fused scan.

Numbers other than small integers become symbols (:class:`NumSym`) so that
SymPy never rounds them; the printer writes them back with ``repr``.
"""

from __future__ import annotations

import sympy as sp

from spikedsl import ir
from spikedsl.targets.torch.expr import number


class NumSym(sp.Symbol):
    """A numeric literal kept exact: ``n_<i>``, its value lives in the
    builder's table (SymPy caches symbols by name, so no value is stored on
    the object)."""

    def __new__(cls, name):
        return super().__new__(cls, name, real=True)


def _numeric(a) -> bool:
    return isinstance(a, NumSym) or bool(getattr(a, "is_Number", False))


class _Ind(sp.Function):
    """0/1 indicator; derivative 0 (as torch's comparisons)."""

    def fdiff(self, argindex=1):
        return sp.S.Zero


class ind_ge(_Ind):
    nargs = 2


class ind_gt(_Ind):
    nargs = 2


class ind_le(_Ind):
    nargs = 2


class ind_lt(_Ind):
    nargs = 2


class ind_eq(_Ind):
    nargs = 2


class ind_ne(_Ind):
    nargs = 2


class land(_Ind):
    nargs = 2


class lor(_Ind):
    nargs = 2


class lnot(_Ind):
    nargs = 1


_CMP = {">=": ind_ge, ">": ind_gt, "<=": ind_le, "<": ind_lt, "==": ind_eq, "!=": ind_ne}
_CMP_OP = {ind_ge: ">=", ind_gt: ">", ind_le: "<=", ind_lt: "<", ind_eq: "==", ind_ne: "!="}


class sigmoid(sp.Function):
    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)


class relu(sp.Function):
    nargs = 1

    def fdiff(self, argindex=1):  # torch: grad * (result > 0)
        return ind_gt(self.args[0], 0)


class where(sp.Function):
    nargs = 3

    def fdiff(self, argindex=1):
        c = self.args[0]
        if argindex == 1:
            return sp.S.Zero
        return where(c, 1, 0) if argindex == 2 else where(c, 0, 1)


class vmin(sp.Function):
    """torch.minimum (tensors) or torch.clamp(x, max=c) (one side a number)."""

    nargs = 2

    def fdiff(self, argindex=1):
        a, b = self.args
        x, o = (a, b) if argindex == 1 else (b, a)
        if _numeric(o):
            return ind_le(x, o)
        if _numeric(x):
            return sp.S.Zero
        return ind_lt(x, o) + ind_eq(x, o) / 2


class vmax(sp.Function):
    nargs = 2

    def fdiff(self, argindex=1):
        a, b = self.args
        x, o = (a, b) if argindex == 1 else (b, a)
        if _numeric(o):
            return ind_ge(x, o)
        if _numeric(x):
            return sp.S.Zero
        return ind_gt(x, o) + ind_eq(x, o) / 2


class clamp(sp.Function):
    """torch.clamp(x, lo, hi)."""

    nargs = 3

    def fdiff(self, argindex=1):
        x, lo, hi = self.args
        if argindex == 1:
            return ind_ge(x, lo) * ind_le(x, hi)
        if argindex == 2:
            return sp.S.Zero if _numeric(lo) else ind_lt(x, lo)
        return sp.S.Zero if _numeric(hi) else ind_gt(x, hi)


_UNARY = {"exp": sp.exp, "log": sp.log, "sqrt": sp.sqrt, "abs": sp.Abs, "tanh": sp.tanh,
          "sin": sp.sin, "cos": sp.cos, "sigmoid": sigmoid, "relu": relu}


class SymBuilder:
    """IR expression -> SymPy, with names looked up in ``env``."""

    def __init__(self):
        self.nums: dict[float, NumSym] = {}
        self.values: dict[str, float] = {}

    def number(self, v: float):
        v = float(v)
        if v == int(v) and abs(v) < 2**31:
            return sp.Integer(int(v))
        if v not in self.nums:
            name = f"n_{len(self.nums)}"
            self.nums[v] = NumSym(name)
            self.values[name] = v
        return self.nums[v]

    def __call__(self, e: ir.Expr, env: dict):
        if isinstance(e, ir.Num):
            return self.number(e.value)
        if isinstance(e, ir.Name):
            return env[e.id]
        if isinstance(e, ir.Neg):
            return -self(e.operand, env)
        if isinstance(e, ir.BinOp):
            a, b = self(e.left, env), self(e.right, env)
            if e.op == "+":
                return a + b
            if e.op == "-":
                return a - b
            if e.op == "*":
                return a * b
            if e.op == "/":
                return a / b
            return a**b
        if isinstance(e, ir.Compare):
            return _CMP[e.op](self(e.left, env), self(e.right, env))
        if isinstance(e, ir.BoolOp):
            return (land if e.op == "and" else lor)(self(e.left, env), self(e.right, env))
        if isinstance(e, ir.Not):
            return lnot(self(e.operand, env))
        if isinstance(e, ir.Call):
            args = [self(a, env) for a in e.args]
            if e.func in _UNARY:
                return _UNARY[e.func](args[0])
            if e.func == "min":
                return vmin(*args)
            if e.func == "max":
                return vmax(*args)
            if e.func == "clip":
                return clamp(*args)
            if e.func == "where":
                return where(*args)
        raise TypeError(f"cannot convert {type(e).__name__}")


_CSE: dict = {}


def _cse(exprs: tuple, prefix: str):
    key = (exprs, prefix)
    if key not in _CSE:
        _CSE[key] = sp.cse(list(exprs), symbols=sp.numbered_symbols(f"_{prefix}"),
                           order="canonical")
    return _CSE[key]


class SymTorchPrinter:
    """SymPy expression -> torch code.  ``names`` maps symbols to code;
    ``dt`` is the code of a dtype (for indicators in arithmetic)."""

    def __init__(self, names: dict, dt: str = "ftype", values: dict[str, float] | None = None):
        self.names = names
        self.dt = dt
        self.values = values or {}
        self.uses_math = False

    def num(self, v: float) -> str:
        s = number(v)
        if "math." in s:
            self.uses_math = True
        return f"({s})" if v < 0 else s

    def __call__(self, e) -> str:
        return self.p(e)[0]

    # precedence: 1 add, 2 mul, 3 unary minus, 4 pow, 5 atom
    def p(self, e) -> tuple[str, int]:
        if isinstance(e, NumSym):
            return self.num(self.values[e.name]), 5
        if isinstance(e, sp.Symbol):
            return self.names[e], 5
        if e.is_Integer:
            v = int(e)
            return (f"({v}.0)", 5) if v < 0 else (f"{v}.0", 5)
        if e.is_Rational or e.is_Float:
            return self.num(float(e)), 5
        if e.is_Add:
            terms = list(e.as_ordered_terms())

            def negative(t):
                c, _ = t.as_coeff_Mul()
                return bool(c.is_Number and c < 0)

            terms = [t for t in terms if not negative(t)] + [t for t in terms if negative(t)]
            out = self.p(terms[0])[0]
            for t in terms[1:]:
                c, _ = t.as_coeff_Mul()
                if c.is_Number and c < 0:
                    s, pr = self.p(-t)
                    out += f" - {s if pr > 1 else f'({s})'}"
                else:
                    s, pr = self.p(t)
                    out += f" + {s}"
            return out, 1
        if e.is_Mul:
            c, _ = e.as_coeff_Mul()
            if c.is_Number and c < 0:
                s, pr = self.p(-e)
                return f"-{s if pr > 2 else f'({s})'}", 3
            num_f, den_f = [], []
            for f in sp.Mul.make_args(e):
                if f.is_Pow and f.exp.is_Number and f.exp < 0:
                    den_f.append(f.base ** (-f.exp))
                elif f.is_Rational and not f.is_Integer:
                    if f.p != 1:
                        num_f.append(sp.Integer(f.p))
                    den_f.append(sp.Integer(f.q))
                else:
                    num_f.append(f)

            def prod(fs):
                parts = []
                for f in fs:
                    s, pr = self.p(f)
                    parts.append(s if pr >= 2 else f"({s})")
                return " * ".join(parts) if parts else "1.0"

            if not den_f:
                return prod(num_f), 2
            dens = [self.p(f) for f in den_f]
            if len(dens) == 1:
                s, pr = dens[0]
                den = s if pr >= 4 else f"({s})"
            else:
                den = "(" + " * ".join(s if pr >= 2 else f"({s})" for s, pr in dens) + ")"
            return f"{prod(num_f)} / {den}", 2
        if e.is_Pow:
            b, x = e.args
            if x == sp.Rational(1, 2):
                return f"torch.sqrt({self(b)})", 5
            if x == sp.Rational(-1, 2):
                return f"1.0 / torch.sqrt({self(b)})", 2
            if x.is_Number and x < 0:
                s, pr = self.p(b ** (-x))
                return f"1.0 / {s if pr >= 4 else f'({s})'}", 2
            bs, bp = self.p(b)
            if x.is_Integer:
                xs = str(int(x))
            else:
                xs, xp = self.p(x)
                xs = xs if xp >= 5 else f"({xs})"
            return f"{bs if bp >= 5 else f'({bs})'} ** {xs}", 4
        if isinstance(e, sp.exp):
            return f"torch.exp({self(e.args[0])})", 5
        if isinstance(e, sp.log):
            return f"torch.log({self(e.args[0])})", 5
        if isinstance(e, sp.Abs):
            return f"torch.abs({self(e.args[0])})", 5
        if isinstance(e, sp.sign):
            return f"torch.sign({self(e.args[0])})", 5
        if isinstance(e, sp.tanh | sp.sin | sp.cos):
            return f"torch.{type(e).__name__}({self(e.args[0])})", 5
        if isinstance(e, sigmoid | relu):
            return f"torch.{type(e).__name__}({self(e.args[0])})", 5
        if isinstance(e, _Ind):
            return f"{self.boolean(e)}.to({self.dt})", 5
        if isinstance(e, where):
            c, a, b = e.args
            if a == 1 and b == 0:
                return f"{self.boolean(c)}.to({self.dt})", 5
            if a == 0 and b == 1:
                return f"torch.logical_not({self.boolean(c)}).to({self.dt})", 5
            if _numeric(a) and _numeric(b):
                cf = f"{self.boolean(c)}.to({self.dt})"
                return f"({self(a)} * {cf} + {self(b)} * (1.0 - {cf}))", 5
            return f"torch.where({self.boolean(c)}, {self(a)}, {self(b)})", 5
        if isinstance(e, vmin | vmax):
            a, b = e.args
            if _numeric(a) or _numeric(b):
                x, c = (a, b) if _numeric(b) else (b, a)
                kw = "max" if isinstance(e, vmin) else "min"
                return f"torch.clamp({self(x)}, {kw}={self(c)})", 5
            fn = "torch.minimum" if isinstance(e, vmin) else "torch.maximum"
            return f"{fn}({self(a)}, {self(b)})", 5
        if isinstance(e, clamp):
            x, lo, hi = e.args
            return f"torch.clamp({self(x)}, {self(lo)}, {self(hi)})", 5
        raise TypeError(f"cannot print {e!r}")

    def boolean(self, e) -> str:
        if type(e) in _CMP_OP:
            a, b = e.args
            return f"({self(a)} {_CMP_OP[type(e)]} {self(b)})"
        if isinstance(e, land | lor):
            fn = "torch.logical_and" if isinstance(e, land) else "torch.logical_or"
            return f"{fn}({self.boolean(e.args[0])}, {self.boolean(e.args[1])})"
        if isinstance(e, lnot):
            return f"torch.logical_not({self.boolean(e.args[0])})"
        return f"({self(e)} != 0)"


def cse_lines(exprs: list, names: dict, printer: SymTorchPrinter, prefix: str,
              namer) -> tuple[list[str], list[str]]:
    """Common subexpressions of ``exprs`` as assignment lines; returns
    (lines, printed results)."""
    repl, reduced = _cse(tuple(exprs), prefix)
    lines = []
    for sym, val in repl:
        local = namer.fresh(f"{prefix}{str(sym)[len(prefix) + 1:]}")
        lines.append(f"{local} = {printer(val)}")
        names[sym] = local
    return lines, [printer(r) for r in reduced]
