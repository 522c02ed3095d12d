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
from spikedsl.ir.exprs import _native_of
from spikedsl.ir.functions import FUNCTIONS, CodeArg, unparen
from spikedsl.ir.visitor import OPERATORS, ExprVisitor
from spikedsl.targets.torch.expr import number


class NumSym(sp.Symbol):
    """A numeric literal kept exact: ``n_<i>``, its value lives in the
    builder's table (SymPy caches symbols by name, so no value is stored on
    the object)."""

    def __new__(cls, name):
        return super().__new__(cls, name, real=True)


def _numeric(a) -> bool:
    return isinstance(a, NumSym) or bool(getattr(a, "is_Number", False))


class Ind(sp.Function):
    """0/1 indicator; derivative 0 (as torch's comparisons)."""

    def fdiff(self, argindex=1):
        return sp.S.Zero


def _indicator(name: str, nargs: int) -> type[Ind]:
    """A 0/1 SymPy function ``name`` (its class name is what the printer reads)."""
    return type(name, (Ind,), {"nargs": nargs})


_CMP = {op: _indicator(f"ind_{suffix}", 2) for op, suffix in
        ((">=", "ge"), (">", "gt"), ("<=", "le"), ("<", "lt"), ("==", "eq"), ("!=", "ne"))}
_CMP_OP = {cls: op for op, cls in _CMP.items()}
land, lor, lnot = _indicator("land", 2), _indicator("lor", 2), _indicator("lnot", 1)


# ------------------------------------------------------------------ functions
_CLASSES: dict[str, type] = {}


def function_class(name: str) -> type:
    """The SymPy function of the table's (non-native) function ``name``; its
    derivative is the table's ``grad`` (torch's autograd formula)."""
    if name not in _CLASSES:
        row = FUNCTIONS[name]

        def fdiff(self, argindex=1):
            args = self.args
            holes = tuple(ir.Name(id=f"_a{k}") for k in range(len(args)))
            const = tuple(_numeric(a) for a in args)
            d = row.grad(holes, argindex - 1, const)
            return _ExactBuilder()(d, {f"_a{k}": a for k, a in enumerate(args)})

        body = {"nargs": row.arity, "fdiff": fdiff}
        if name == "where":
            body["eval"] = classmethod(_where_eval)
        _CLASSES[name] = type(name, (sp.Function,), body)
    return _CLASSES[name]


def _where_eval(cls, c, a, b):
    """``where(c, 1, 0)`` of a 0/1 condition is ``c``, ``where(c, 0, 1)`` is
    ``1 - c`` (so that the derivatives of a choice fold into sums)."""
    if isinstance(c, Ind) and a.is_Number and b.is_Number:
        return b + (a - b) * c
    return None


class SymBuilder(ExprVisitor):
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
        return self.visit(e, env)

    def visit_num(self, e: ir.Num, env):
        return self.number(e.value)

    def visit_name(self, e: ir.Name, env):
        return env[e.id]

    def visit_neg(self, e: ir.Neg, env):
        return -self.visit(e.operand, env)

    def visit_bin(self, e: ir.BinOp, env):
        return OPERATORS[e.op](self.visit(e.left, env), self.visit(e.right, env))

    def visit_cmp(self, e: ir.Compare, env):
        return _CMP[e.op](self.visit(e.left, env), self.visit(e.right, env))

    def visit_bool(self, e: ir.BoolOp, env):
        return (land if e.op == "and" else lor)(self.visit(e.left, env), self.visit(e.right, env))

    def visit_not(self, e: ir.Not, env):
        return lnot(self.visit(e.operand, env))

    def visit_call(self, e: ir.Call, env):
        row = FUNCTIONS.get(e.func)
        if row is None:
            raise TypeError(f"cannot convert a call of {e.func!r}")
        args = [self.visit(a, env) for a in e.args]
        if row.native:
            return row.sympy(*args)
        return function_class(e.func)(*args)

    def unsupported(self, e, *args):
        raise TypeError(f"cannot convert {type(e).__name__}")


class _ExactBuilder(SymBuilder):
    """For derivatives: numbers become exact rationals (no NumSym table)."""

    def number(self, v: float):
        v = float(v)
        return sp.Integer(int(v)) if v == int(v) and abs(v) < 2**31 else sp.Rational(v)


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
        self.values = values if values is not None else {}
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
        if isinstance(e, sp.sign):
            return f"torch.sign({self(e.args[0])})", 5
        if isinstance(e, Ind):
            return f"{self.boolean(e)}.to({self.dt})", 5
        fname = type(e).__name__ if _CLASSES.get(type(e).__name__) is type(e) else \
            _native_of(e)
        if fname is not None:
            row = FUNCTIONS[fname]
            if callable(row.torch_code):
                return row.torch_code([self.arg(a) for a in e.args], self.dt), 5
            return f"{row.torch_code}({', '.join(self.arg(a).tensor for a in e.args)})", 5
        raise TypeError(f"cannot print {e!r}")

    def arg(self, a) -> CodeArg:
        if isinstance(a, NumSym):
            v = self.values[a.name]
        elif getattr(a, "is_Number", False):
            v = float(a)
        else:
            v = None
        return CodeArg(v, text=lambda: self(a),
                       tensor=lambda: self(a) if v is None else
                       f"torch.as_tensor({self(a)}, dtype={self.dt})",
                       cond=lambda: self.boolean(a))

    def boolean(self, e) -> str:
        if type(e) in _CMP_OP:
            a, b = e.args
            return f"({self(a)} {_CMP_OP[type(e)]} {self(b)})"
        if isinstance(e, land | lor):
            fn = "torch.logical_and" if isinstance(e, land) else "torch.logical_or"
            return f"{fn}({self.boolean(e.args[0])}, {self.boolean(e.args[1])})"
        if isinstance(e, lnot):
            return f"torch.logical_not({unparen(self.boolean(e.args[0]))})"
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
