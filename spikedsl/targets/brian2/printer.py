"""Brian2 abstract code from lowered expressions, with physical units.

Brian2 checks the dimensions of every statement.  :class:`B2Printer` infers
the dimension of each sub-expression from the declared dimensions of the
names (``LParam.dim``, ``LState.dim``, input dimensions, ``dt`` a time) and
prints numbers that carry a unit as ``value * unit`` in SI base units, so the
generated code is the spec's arithmetic with units attached.

Lowering (SymPy) may turn a number with a unit into a plain number (e.g. the
``0.04 / mV`` of a quadratic term).  Such code does not check in Brian2; the
caller then prints the neuron in *stripped* form: every dimensioned name
``x`` is read as ``(x / unit)`` and every assignment multiplies back by the
target's unit.  Both forms compute the same SI floats (the base units are
1.0 in generated code).
"""

from __future__ import annotations

import keyword
import re
from fractions import Fraction

from spikedsl import ir
from spikedsl.ir.exprs import EvalError, Printer, evaluate
from spikedsl.ir.functions import FUNCTIONS
from spikedsl.ir.units import (
    AMP,
    FARAD,
    HERTZ,
    OHM,
    ONE,
    SIEMENS,
    TIME,
    VOLT,
    Dim,
    ddiv,
    dmul,
    dpow,
    parse_dim,
    parse_unit,
)

# ----------------------------------------------------------------- names
_PREFIX = "(?:y|z|a|f|p|n|u|m|c|d|da|h|k|M|G|T|P|E|Z|Y)?"
_BASES = ("metre|meter|gram|gramme|kilogram|kilogramme|kgram|kgramme|second|amp|ampere|kelvin|mole|mol|"
          "candle|radian|steradian|hertz|newton|pascal|joule|watt|coulomb|volt|farad|ohm|"
          "siemens|weber|tesla|henry|lumen|lux|becquerel|gray|sievert|katal|liter|litre|molar|"
          "celsius")
_SHORT = "Hz|cm|mA|mM|mV|mm|ms|nA|nF|nM|nS|pA|pF|uA|uF|uM|uS|um|us|kHz|MHz"
_UNIT_RE = re.compile(rf"^(?:{_PREFIX}(?:{_BASES})|{_SHORT})[23]?$")
# The one table of names a spec identifier is renamed away from (``Names``):
# what Brian2 refuses as a variable of a group, and what the generated code
# uses itself.  A spec name in it becomes NAME_1 (NAME_2, ...) in the script.
_RESERVED = {
    # Brian2 special names, functions and constants
    "t", "dt", "xi", "i", "j", "N", "t_in_timesteps", "lastspike", "not_refractory", "refractory",
    "lastupdate", "delay", "N_incoming", "N_outgoing", "N_pre", "N_post", "i_pre", "j_post",
    "abs", "arccos", "arcsin", "arctan", "ceil", "clip", "cos", "cosh", "exp", "expm1",
    "exprel", "floor", "int", "log", "log10", "log1p", "poisson", "rand", "randn", "sign",
    "sin", "sinh", "sqrt", "tan", "tanh", "timestep", "e", "inf", "pi", "True", "False",
    "bool", "float", "dtype",
    # arguments of Brian2's code templates (numpy and cython code objects)
    "self", "scalar_code", "vector_code", "owner", "variables", "codeobj_name",
    "variable_indices", "get_array_name",
    # the weight of every synapse: a neuron variable of the same name is refused
    # ("the post-synaptic variable 'w' has the same name as a synaptic variable")
    "w",
}


def is_reserved(name: str) -> bool:
    """Can ``name`` not be a variable of a Brian2 group?  (``xi_*`` are noise
    terms in Brian2's equations.)"""
    return (name in _RESERVED or keyword.iskeyword(name) or name.startswith(("_", "xi_"))
            or name.endswith(("_pre", "_post")) or bool(_UNIT_RE.match(name)))


class Names:
    """Deterministic renaming of spec identifiers into one Brian2 namespace."""

    def __init__(self, taken: set[str] | None = None):
        self.taken: set[str] = set(taken or ())
        self.map: dict[str, str] = {}

    def fresh(self, base: str) -> str:
        name = base if not base.startswith("_") else f"u{base}"
        if name == "xi" or name.startswith("xi_"):
            name = f"u_{name}"  # xi, xi_1, xi_2, ... would all be noise terms
        if name.endswith(("_pre", "_post")):
            name += "_"
        cand, k = name, 1
        while cand in self.taken or is_reserved(cand):
            cand = f"{name}_{k}"
            k += 1
        self.taken.add(cand)
        return cand

    def user(self, name: str) -> str:
        """The Brian2 name of spec identifier ``name`` (allocated once)."""
        if name not in self.map:
            self.map[name] = self.fresh(name)
        return self.map[name]


# ----------------------------------------------------------------- units
_NAMED: list[tuple[Dim, str]] = [(VOLT, "volt"), (AMP, "amp"), (TIME, "second"), (OHM, "ohm"),
                                 (SIEMENS, "siemens"), (FARAD, "farad"), (HERTZ, "hertz")]
_BASE = ("metre", "kilogram", "second", "amp")


def dim_of(text: str) -> Dim:
    return parse_dim(text or "1")


def unit_expr(d: Dim) -> str | None:
    """A Brian2 unit expression for dimension ``d`` (SI base scale), None if 1."""
    if d == ONE:
        return None
    for nd, name in _NAMED:
        if nd == d:
            return name
    for nd, name in _NAMED:
        if ddiv(d, nd) == HERTZ:
            return f"{name}/second"
        if dmul(d, nd) == ONE:
            return f"1/{name}"
    for k, (nd, name) in enumerate(_NAMED):
        for nd2, name2 in _NAMED[k:]:
            if dmul(nd, nd2) == d:
                return f"{name}*{name2}"
        if ddiv(d, nd) in [x for x, _ in _NAMED]:
            other = next(n for x, n in _NAMED if x == ddiv(d, nd))
            return f"{other}*{name}"
    parts = []
    for e, n in zip(d, _BASE):
        if e == 0:
            continue
        exp = int(e) if Fraction(e).denominator == 1 else float(e)
        parts.append(n if exp == 1 else f"{n}**{exp}")
    return "*".join(parts)


def unit_names(text: str | None) -> set[str]:
    """The Brian2 unit names used in a unit expression (for imports)."""
    if not text:
        return set()
    return set(re.findall(r"[A-Za-z_]+", text)) - {"boolean", "integer", "shared", "constant"}


# ----------------------------------------------------------------- printer
class DimError(Exception):
    """The expression does not check dimensionally as printed."""


_POLY = "poly"  # a literal zero: adopts the dimension of its partner


class B2Printer(Printer):
    """Prints ``ir.Expr`` as Brian2 abstract code.

    ``names`` maps spec identifiers to Brian2 names, ``dims`` gives their
    dimensions.  ``dt``: the Brian2 text of the symbol ``dt`` (``"dt"`` for
    neurons with units, ``"1.0"`` otherwise).  ``stripped``: print the
    dimensionless form (see the module docstring).
    """

    AND = "and"
    OR = "or"
    NOT = "not "
    POLY = _POLY  # the dimension of a literal zero (also of a temporary equal to 0)

    def __init__(self, names: dict[str, str], dims: dict[str, Dim], *, dt: str = "1.0",
                 stripped: bool = False):
        super().__init__()
        self.names, self.dims, self.dt, self.stripped = names, dims, dt, stripped
        self.units: set[str] = set()

    # ------------------------------------------------------------ helpers
    def unit(self, d: Dim) -> str | None:
        u = unit_expr(d)
        self.units |= unit_names(u)
        return u

    def zero(self, d) -> str:
        if d in (_POLY, ONE) or self.stripped:
            return "0.0"
        return f"0.0*{self.unit(d)}"

    def inf(self, d, neg=False) -> str:
        s = "-inf" if neg else "inf"
        if d in (_POLY, ONE) or self.stripped:
            return s
        return f"{s}*{self.unit(d)}"

    @staticmethod
    def _unify(a, b):
        if a == _POLY:
            return b
        if b == _POLY or a == b:
            return a
        raise DimError("dimension mismatch")

    # ------------------------------------------------------------ API
    def expr(self, e: ir.Expr) -> tuple[str, Dim]:
        """Numeric text and dimension of ``e``."""
        s, _, d, b = self.q(e)
        if b:
            s = f"int({s})"
        return s, (ONE if d == _POLY else d)

    def cond(self, e: ir.Expr) -> str:
        """``e`` as a boolean expression."""
        s, pr, d, b = self.q(e)
        if b:
            return s
        return f"{self.wrap(s, pr, 5)} != {self.zero(d)}"

    def assign(self, target: str, e: ir.Expr, op: str = "=") -> str:
        """``target op e`` with the dimension of ``target`` checked (or restored)."""
        want = self.dims.get(target, ONE)
        s, d = self.expr(e)
        name = self.names.get(target, target)
        if self.stripped:
            u = self.unit(want) if want != ONE else None
            if u is not None:
                s = f"({s})*{u}"
            return f"{name} {op} {s}"
        if d != want and not (d == ONE and self._is_zero(e)):
            raise DimError(f"cannot assign to {target}")
        if d != want:  # a literal zero
            s = self.zero(want)
        return f"{name} {op} {s}"

    @staticmethod
    def _is_zero(e) -> bool:
        return isinstance(e, ir.Num) and e.value == 0 and not e.unit

    # ------------------------------------------------------------ recursion
    def q(self, e: ir.Expr):
        """-> (text, precedence, dimension or _POLY, is_boolean)."""
        return self.visit(e)

    def visit_num(self, e: ir.Num):
        s = self.number(e.value)
        d = parse_unit(e.unit)[1] if e.unit else ONE
        if d != ONE and not self.stripped:
            return f"{s}*{self.unit(d)}" if e.value >= 0 else f"({s})*{self.unit(d)}", 6, d, \
                False
        if e.value < 0:
            return f"({s})", 9, ONE, False
        return s, 9, (_POLY if e.value == 0 else ONE), False

    def visit_name(self, e: ir.Name):
        if e.id == "dt":
            if self.dt == "dt":
                return ("(dt/second)", 9, ONE, False) if self.stripped else (
                    "dt", 9, TIME, False)
            return self.dt, 9, ONE, False
        name = self.names.get(e.id, e.id)
        d = self.dims.get(e.id, ONE)
        if self.stripped and d not in (ONE, _POLY):
            return f"({name}/{self.unit(d)})", 9, ONE, False
        return name, 9, d, False

    def visit_neg(self, e: ir.Neg):
        s, pr, d, _ = self.num(e.operand)
        return f"-{self.wrap(s, pr, self._PREC['neg'] + 1)}", self._PREC["neg"], d, False

    def visit_bin(self, e: ir.BinOp):
        pr = self._PREC[e.op]
        ls, lp, ld, _ = self.num(e.left)
        rs, rp, rd, _ = self.num(e.right)
        if e.op in "+-":
            d = self._unify_text(e, ls, ld, rs, rd)
            ls, rs = d[1], d[2]
            d = d[0]
        elif e.op == "*":  # zero times anything is a zero of any dimension
            d = _POLY if _POLY in (ld, rd) else dmul(self._one(ld), self._one(rd))
        elif e.op == "/":
            d = _POLY if ld == _POLY else ddiv(self._one(ld), self._one(rd))
        else:
            if self._one(rd) != ONE:
                raise DimError("dimensioned exponent")
            if self._one(ld) == ONE:
                d = ONE
            else:
                try:
                    k = evaluate(e.right, {})
                except EvalError:
                    raise DimError("non-constant exponent of a dimensioned base") from None
                d = dpow(ld, Fraction(k).limit_denominator(64))
            return self.power(self.wrap(ls, lp, pr + 1), self.wrap(rs, rp, pr)), pr, d, False
        rmin = pr + 1 if e.op in "-/" else pr
        if e.op in "+*":
            rmin = pr + 1 if isinstance(e.right, ir.BinOp) and e.right.op in "-/" else pr
        return f"{self.wrap(ls, lp, pr)} {e.op} {self.wrap(rs, rp, rmin)}", pr, d, False

    def visit_cmp(self, e: ir.Compare):
        ls, lp, ld, _ = self.num(e.left)
        rs, rp, rd, _ = self.num(e.right)
        _, ls, rs = self._unify_text(e, ls, ld, rs, rd)
        pr = self._PREC["cmp"]
        return f"{self.wrap(ls, lp, pr + 1)} {e.op} {self.wrap(rs, rp, pr + 1)}", pr, ONE, True

    def visit_bool(self, e: ir.BoolOp):
        a, b = self.cond(e.left), self.cond(e.right)
        # cond() returns a comparison or a boolean expression: parenthesise
        return f"({a}) {e.op} ({b})", self._PREC[e.op], ONE, True

    def visit_not(self, e: ir.Not):
        return f"not ({self.cond(e.operand)})", self._PREC["not"], ONE, True

    def visit_call(self, e: ir.Call):
        return self._call(e)

    def unsupported(self, e, *args):
        raise DimError(f"cannot print {type(e).__name__}")

    visit_attr = visit_str = visit_list = unsupported

    def num(self, e):
        s, pr, d, b = self.q(e)
        if b:
            return f"int({s})", 9, ONE, False
        return s, pr, d, b

    @staticmethod
    def _one(d):
        return ONE if d == _POLY else d

    def _unify_text(self, e, ls, ld, rs, rd):
        d = self._unify(ld, rd)
        if ld == _POLY and d not in (_POLY, ONE) and not self.stripped:
            ls = self.zero(d)
        if rd == _POLY and d not in (_POLY, ONE) and not self.stripped:
            rs = self.zero(d)
        return d, ls, rs

    def _call(self, e: ir.Call):
        """A call as the table says: its dimension rule, then its Brian2 template."""
        f = FUNCTIONS.get(e.func)
        if f is None:
            raise DimError(f"unknown function {e.func}")
        rule = f.dim
        fields: dict[str, str] = {}
        first = 0
        if rule == "choose":
            fields["c0"] = self.cond(e.args[0])
            first = 1
        args = {i: self.num(a) for i, a in enumerate(e.args) if i >= first}
        if rule == "dimensionless":
            if any(self._one(d) != ONE for _, _, d, _ in args.values()):
                raise DimError(f"{f.name} of a dimensioned value")
            d = ONE
        elif rule == "sqrt":
            d = dpow(self._one(args[0][2]), Fraction(1, 2))
        else:  # same / choose: the arguments share one dimension
            d = _POLY
            for _, _, ad, _ in args.values():
                d = self._unify(d, ad)
            if d not in (_POLY, ONE) and not self.stripped:
                args = {i: (self.zero(d), 9, d, b) if ad == _POLY else (s, p, ad, b)
                        for i, (s, p, ad, b) in args.items()}
        for i, (s, p, _, _) in args.items():
            fields[f"a{i}"] = s
            fields[f"w{i}"] = self.wrap(s, p, 7)
        if "{zero}" in f.brian2[0]:
            fields["zero"] = self.zero(d)
        if "{inf}" in f.brian2[0]:
            fields["inf"] = self.inf(d)
        if "{ninf}" in f.brian2[0]:
            fields["ninf"] = self.inf(d, neg=True)
        template, pr = f.brian2
        return template.format(**fields), pr, (ONE if rule == "dimensionless" else d), False
