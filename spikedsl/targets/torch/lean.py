"""Printing SymPy expressions over large tensors with few kernels (the fused
scan's backward, :mod:`spikedsl.targets.torch.adjoint`).

In eager torch every operation is one pass over memory, so a sum of products
such as ``0.9 - 0.9*z - 0.9*q*sgn`` costs one kernel per operator when printed
as an expression.  :class:`LeanPrinter` writes it as statements that use
torch's fused forms instead: ``torch.rsub(z, 0.9, alpha=0.9)`` then
``.addcmul_(q, sgn, value=-0.9)`` (2 passes instead of 5); temporaries it
created itself are updated in place; ``out=`` puts a result where it belongs.
Numbers and tensors that do not depend on the step (parameters) are printed as
they are by :class:`~spikedsl.targets.torch.sym.SymTorchPrinter`.

The result equals the expression up to rounding (the backward need not round
like the forward): gradients agree with autograd to ~1e-15 in float64.
"""

from __future__ import annotations

import re

import sympy as sp

from spikedsl.targets.torch.expr import number
from spikedsl.targets.torch.sym import NumSym, SymTorchPrinter

__all__ = ["LeanPrinter"]

# torch functions with an in-place method of the same name (x.abs_())
_INPLACE = {"torch.abs", "torch.exp", "torch.log", "torch.sigmoid", "torch.tanh", "torch.sqrt",
            "torch.sin", "torch.cos", "torch.atan", "torch.expm1", "torch.log1p", "torch.relu",
            "torch.neg", "torch.reciprocal", "torch.square", "torch.rsqrt"}
_POW = {2.0: "square", -1.0: "reciprocal", 0.5: "sqrt", -0.5: "rsqrt"}


class LeanPrinter:
    """Statements computing SymPy expressions over per-step tensors.

    ``names``: symbol -> code (shared with ``fallback``, which prints what is
    not a per-step tensor); ``big``: the symbols that are per-step tensors."""

    def __init__(self, names: dict, big: set, fallback: SymTorchPrinter, namer):
        self.names = names
        self.big = big
        self.fb = fallback
        self.nm = namer
        self.owned: set = set()  # symbols standing for temporaries made here
        self.count = 0
        self.temps: set[str] = set()  # locals made by _fresh

    # ---------------------------------------------------------------- classification
    def is_big(self, e) -> bool:
        return bool(e.free_symbols & self.big)

    def num(self, e) -> float | None:
        """The value of a numeric expression (numbers and NumSyms), else None."""
        if isinstance(e, NumSym):
            return self.fb.values[e.name]
        if getattr(e, "is_Number", False):
            return float(e)
        if e.is_Pow:
            b, x = self.num(e.base), self.num(e.exp)
            return None if b is None or x is None else b ** x
        if e.is_Mul or e.is_Add:
            v = 1.0 if e.is_Mul else 0.0
            for a in e.args:
                f = self.num(a)
                if f is None:
                    return None
                v = v * f if e.is_Mul else v + f
            return v
        return None

    def small(self, e) -> str:
        """Code of an expression without per-step tensors."""
        v = self.num(e)
        return self.fb.num(v) if v is not None else self.fb(e)

    def small_factor(self, e) -> str:
        """The same, parenthesised where needed as the left operand of ``*``."""
        v = self.num(e)
        if v is not None:
            return self.fb.num(v)
        code, prec = self.fb.p(e)
        return code if prec >= 2 else f"({code})"

    # ---------------------------------------------------------------- entry point
    def assign(self, e, lines: list[str], hint: str, out: str | None = None,
               name: str | None = None) -> str:
        """Append statements computing ``e``; returns the code of the result:
        ``out`` when given, else ``name`` when given, else a fresh local, an
        existing name or (no per-step tensor) the printed expression."""
        if not self.is_big(e):
            code = self.small(e)
            if out is not None:
                lines.append(f"{out}.copy_({code})")
                return out
            if name is not None:
                lines.append(f"{name} = {code}")
                return name
            return code
        start = len(lines)
        temps = set(self.temps)
        code, _ = self.emit(e, lines, hint, out, name)
        if out is not None and code != out:
            lines.append(f"{out}.copy_({code})")
            return out
        if name is not None and code != name:
            if code in self.temps and code not in temps:  # made here: rename it
                pat = re.compile(rf"\b{re.escape(code)}\b")
                lines[start:] = [pat.sub(name, ln) for ln in lines[start:]]
            else:
                lines.append(f"{name} = {code}")
            return name
        return code

    def cse(self, items: list[tuple[str, object]], lines: list[str], prefix: str) -> list[str]:
        """Common subexpressions first, then every (name, expression); returns
        the codes of the results."""
        from spikedsl.targets.torch.sym import _cse

        repl, reduced = _cse(tuple(e for _, e in items), prefix)
        numbers: dict = {}  # numeric subexpressions stay numbers (coefficients)
        for sym, val in repl:
            val = val.xreplace(numbers) if numbers else val
            if self.num(val) is not None:
                numbers[sym] = val
                continue
            local = self.nm.fresh(f"{prefix}{str(sym)[len(prefix) + 1:]}")
            code = self.assign(val, lines, local, name=local)
            self.names[sym] = code
            if self.is_big(val):
                self.big.add(sym)
        return [self.assign(e.xreplace(numbers) if numbers else e, lines, nm_, name=nm_)
                for (nm_, _), e in zip(items, reduced)]

    # ---------------------------------------------------------------- emission
    def _fresh(self, hint: str) -> str:
        self.count += 1
        name = self.nm.fresh(f"{hint}_{self.count}")
        self.temps.add(name)
        return name

    def _bind(self, lines, hint, code, out, name=None) -> tuple[str, bool]:
        """A statement creating a new tensor (``out=`` is already in ``code``)."""
        if out is not None:
            lines.append(code)
            return out, True
        local = name or self._fresh(hint)
        lines.append(f"{local} = {code}")
        return local, True

    @staticmethod
    def _o(out) -> str:
        return f", out={out}" if out is not None else ""

    def emit(self, e, lines, hint, out=None, name=None) -> tuple[str, bool]:
        """-> (code, owned): ``owned`` temporaries may be updated in place."""
        if isinstance(e, sp.Symbol):
            return self.names[e], e in self.owned
        if e.is_Add:
            return self._add(e, lines, hint, out, name)
        if e.is_Mul:
            return self._mul(e, lines, hint, out, name)
        if e.is_Pow and self.num(e.exp) is not None:
            return self._pow(e, lines, hint, out, name)
        return self._call(e, lines, hint, out, name)

    def _split(self, t) -> tuple[float, list, list]:
        """A product -> (numeric coefficient, numerator factors, denominators)."""
        k = 1.0
        num, den = [], []
        for f in sp.Mul.make_args(t):
            v = self.num(f)
            if v is not None:
                k *= v
            elif f.is_Pow and self.num(f.exp) is not None and self.num(f.exp) < 0 and \
                    self.is_big(f.base):
                den.append(f.base ** (-f.exp))
            else:
                num.append(f)
        return k, num, den

    def _factor(self, f, lines, hint) -> str:
        """Code of one factor (a name, a small tensor, or a computed temporary)."""
        if not self.is_big(f):
            return self.small(f)
        return self.emit(f, lines, hint)[0]

    def _as_symbol(self, e, lines, hint):
        """Compute ``e`` into a temporary and return a symbol standing for it."""
        code, owned = self.emit(e, lines, hint)
        d = sp.Dummy(code)
        self.names[d] = code
        self.big.add(d)
        if owned:
            self.owned.add(d)
        return d

    def _add(self, e, lines, hint, out, name) -> tuple[str, bool]:
        const = []
        terms = []  # (k, factors): one or two factors, no denominators
        for t in sp.Add.make_args(e):
            if not self.is_big(t):
                const.append(t)
                continue
            k, num, den = self._split(t)
            if den or len(num) > 2 or any(f.is_Add for f in num):
                num = [self._as_symbol(sp.Mul(*num) / sp.Mul(*den), lines, hint)]
            terms.append((k, num))
        merged: dict = {}  # equal factors: the coefficients add up
        for k, num in terms:
            key = tuple(num)
            merged[key] = merged.get(key, 0.0) + k
        terms = [(k, list(key)) for key, k in merged.items() if k != 0.0]
        c0 = self.small(sp.Add(*const)) if const else None
        o = self._o(out)
        # the sum starts with one operation: c0 + k*a, a + k*b, a + k*b*c or a*b
        singles = [t for t in terms if len(t[1]) == 1]
        unit = [t for t in singles if t[0] == 1.0]
        if c0 is not None and singles:
            k, fs = singles[0]
            terms.remove((k, fs))
            a = self._factor(fs[0], lines, hint)
            v0 = self.num(sp.Add(*const))
            if k == 1.0 and v0 is not None and v0 < 0:
                code = f"torch.sub({a}, {number(-v0)}{o})"
            elif k == 1.0:
                code = f"torch.add({a}, {c0}{o})"
            elif k == -1.0:
                code = f"torch.rsub({a}, {c0}{o})"
            else:
                code = f"torch.rsub({a}, {c0}, alpha={number(-k)}{o})"
            acc, _ = self._bind(lines, hint, code, out, name)
            c0 = None
        elif unit and len(terms) > 1:
            terms.remove(unit[0])
            k2, fs2 = next((t for t in terms if len(t[1]) == 2), terms[0])
            terms.remove((k2, fs2))
            a = self._factor(unit[0][1][0], lines, hint)
            b = self._factor(fs2[0], lines, hint)
            if len(fs2) == 1:
                code = f"torch.sub({a}, {b}" if k2 == -1.0 else f"torch.add({a}, {b}"
                code += "" if abs(k2) == 1.0 else f", alpha={number(k2)}"
            else:
                c = self._factor(fs2[1], lines, hint)
                code = f"torch.addcmul({a}, {b}, {c}{self._value(k2)}"
            acc, _ = self._bind(lines, hint, code + f"{o})", out, name)
        else:
            k, fs = terms.pop(0)
            a = self._factor(fs[0], lines, hint)
            if len(fs) == 2:
                b = self._factor(fs[1], lines, hint)
                acc, _ = self._bind(lines, hint, f"torch.mul({a}, {b}{o})", out, name)
                if k != 1.0:
                    lines.append(f"{acc}.mul_({number(k)})")
            else:
                acc, _ = self._bind(lines, hint, f"torch.mul({a}, {number(k)}{o})", out, name)
        for k2, fs2 in terms:
            b = self._factor(fs2[0], lines, hint)
            if len(fs2) == 2:
                c = self._factor(fs2[1], lines, hint)
                lines.append(f"{acc}.addcmul_({b}, {c}{self._value(k2)})")
            elif k2 == -1.0:
                lines.append(f"{acc}.sub_({b})")
            else:
                lines.append(f"{acc}.add_({b}" + ("" if k2 == 1.0 else
                                                  f", alpha={number(k2)}") + ")")
        if c0 is not None:
            lines.append(f"{acc}.add_({c0})")
        return acc, True

    @staticmethod
    def _value(k: float) -> str:
        return "" if k == 1.0 else f", value={number(k)}"

    def _mul(self, e, lines, hint, out, name) -> tuple[str, bool]:
        k, num, den = self._split(e)
        bigs = [f for f in num if self.is_big(f)]
        if len(bigs) == 1 and bigs[0].is_Add and not den and len(num) == 1:
            # k * (a + b + c): the coefficient goes into the terms
            return self._add(sp.Add(*[k * t for t in sp.Add.make_args(bigs[0])],
                                    evaluate=False), lines, hint, out, name)
        smalls = [f for f in num if not self.is_big(f)]
        factors = bigs + ([sp.Mul(*smalls)] if smalls else [])
        o = self._o(out)
        acc, owned = None, False
        for f in factors:
            c = self._factor(f, lines, hint)
            if acc is None:
                acc, owned = c, self.is_big(f) and isinstance(f, sp.Symbol) and f in self.owned
            elif owned:
                lines.append(f"{acc}.mul_({c})")
            else:
                acc, owned = self._bind(lines, hint, f"torch.mul({acc}, {c}{o})", out, name)
        for d in den:
            c = self._factor(d, lines, hint)
            if acc is None:
                acc, owned = self._bind(lines, hint, f"torch.reciprocal({c}{o})", out, name)
            elif owned:
                lines.append(f"{acc}.div_({c})")
            else:
                acc, owned = self._bind(lines, hint, f"torch.div({acc}, {c}{o})", out, name)
        if k != 1.0:
            if owned:
                lines.append(f"{acc}.mul_({number(k)})")
            else:
                acc, owned = self._bind(lines, hint, f"torch.mul({acc}, {number(k)}{o})", out,
                                        name)
        return acc, owned

    def _pow(self, e, lines, hint, out, name) -> tuple[str, bool]:
        n = self.num(e.exp)
        code, owned = self.emit(e.base, lines, hint)
        fn = _POW.get(n)
        if owned and out is None:
            lines.append(f"{code}.{fn}_()" if fn else f"{code}.pow_({number(n)})")
            return code, True
        call = f"torch.{fn}({code}{self._o(out)})" if fn else \
            f"torch.pow({code}, {number(n)}{self._o(out)})"
        return self._bind(lines, hint, call, out, name)

    def _call(self, e, lines, hint, out, name) -> tuple[str, bool]:
        """Functions and everything else: the arguments are computed first, the
        node itself is printed by the fallback printer."""
        subs = {}
        for a in e.args:
            if self.is_big(a) and not isinstance(a, sp.Symbol):
                subs[a] = self._as_symbol(a, lines, hint)
        code = self.fb(e.xreplace(subs) if subs else e)
        head = code.split("(", 1)[0]
        if head in _INPLACE and len(e.args) == 1 and code.endswith(")"):
            d = subs.get(e.args[0])
            if d is not None and d in self.owned and out is None:
                lines.append(f"{self.names[d]}.{head[len('torch.'):]}_()")
                return self.names[d], True
            if out is not None:
                return self._bind(lines, hint, f"{code[:-1]}{self._o(out)})", out)
        if out is not None:
            lines.append(f"{out}.copy_({code})")
            return out, True
        return self._bind(lines, hint, code, None, name)
