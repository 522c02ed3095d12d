"""The surrogates of the spike (docs/language.md): one row per surrogate.

The spike is a Heaviside step of ``x = value - threshold``; backward, its
derivative is replaced by the surrogate's ``dS/dx``.  Everything that knows a
surrogate reads it here: the checks (names, arguments), lowering (defaults),
the torch target (the derivative, printed from the row's expression), the
Norse target (its equivalent threshold method, if any), the NIR exporter and
importer (the name in the metadata).  Adding a surrogate is one row of
:data:`SURROGATES` (tests/test_functions.py checks its derivative).

Fields of a row (:class:`Surrogate`):

``defaults``
    every argument and its default value.  ``optional``: arguments whose 0
    means "not given" (dropped from the lowered surrogate).
``formula``
    ``dS/dx`` as docs/language.md writes it.
``derivative(x, args)``
    ``dS/dx`` as an expression over ``x`` (the table's functions only);
    ``args``: every argument (defaults filled in).
``norse``
    the Norse threshold method with exactly this derivative, for the
    arguments in ``when`` (None: none).
``snntorch``
    (class of ``snntorch.surrogate``, its arguments in order) with this
    derivative, if there is one.  NIR has no surrogates: the NIR target
    keeps the name and arguments in the node's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.ir.functions import binop, call, compare, num


@dataclass(frozen=True)
class NorseEquivalent:
    method: str  # norse.torch threshold method
    alpha: float  # its alpha
    when: dict[str, float]  # the arguments for which the derivative is the same
    note: str = ""  # what the refusal message says about it


@dataclass(frozen=True)
class Surrogate:
    name: str
    defaults: dict[str, float]
    formula: str
    derivative: Callable[[ir.Expr, Mapping[str, float]], ir.Expr]
    norse: NorseEquivalent | None = None
    snntorch: tuple[str, tuple[str, ...]] | None = None
    optional: tuple[str, ...] = field(default=())

    def resolve(self, given: Mapping[str, float]) -> dict[str, float]:
        """The lowered arguments: defaults, then ``given``; optional 0s dropped."""
        args = {**self.defaults, **given}
        return {k: v for k, v in args.items() if not (k in self.optional and v == 0.0)}

    def dsdx(self, x: ir.Expr, args: Mapping[str, float]) -> ir.Expr:
        """``dS/dx`` at ``x`` for lowered arguments ``args``."""
        return self.derivative(x, {**self.defaults, **args})


# ------------------------------------------------------------------ derivatives
def _sigmoid(x, a):
    k = num(a["slope"])
    s = call("sigmoid", binop("*", k, x))
    return binop("*", binop("*", k, s), binop("-", num(1.0), s))


def _fast_sigmoid(x, a):
    den = binop("+", num(1.0), binop("*", num(a["slope"]), call("abs", x)))
    return binop("/", num(1.0), binop("**", den, num(2.0)))


def _atan(x, a):
    al = a["alpha"]
    den = binop("+", num(1.0), binop("**", binop("*", num(math.pi / 2 * al), x), num(2.0)))
    return binop("/", num(al / 2), den)


def _rectangular(x, a):
    w = a["width"]
    h = a["scale"] if a.get("scale") else 1.0 / (2.0 * w)
    return binop("*", compare("<", call("abs", x), num(w)), num(h))


def _triangle(x, a):
    w = num(a["width"])
    return binop("/", call("max", num(0.0), binop("-", num(1.0), binop("/", call("abs", x), w))),
                 w)


def _ste(x, a):
    return num(1.0)


# ------------------------------------------------------------------ the table
_ROWS = [
    Surrogate("sigmoid", {"slope": 5.0}, "k·σ(kx)·(1−σ(kx))", _sigmoid,
              norse=NorseEquivalent("tanh", 2.0, {"slope": 4.0},
                                    "'tanh' with alpha 2 is sigmoid(slope = 4)"),
              snntorch=("Sigmoid", ("slope",))),
    Surrogate("fast_sigmoid", {"slope": 25.0}, "1 / (1 + k|x|)²", _fast_sigmoid,
              norse=NorseEquivalent("super", 1.0, {"slope": 1.0},
                                    "'super' is fast_sigmoid(slope = 1) whatever its alpha"),
              snntorch=("FastSigmoid", ("slope",))),
    Surrogate("atan", {"alpha": 2.0}, "(a/2) / (1 + (π/2·a·x)²)", _atan,
              snntorch=("ATan", ("alpha",))),
    Surrogate("rectangular", {"width": 0.5, "scale": 0.0},
              "1/(2w) if |x| < w else 0 (scale: the height instead)", _rectangular,
              optional=("scale",)),
    Surrogate("triangle", {"width": 1.0}, "max(0, 1 − |x|/w) / w", _triangle,
              norse=NorseEquivalent("triangle", 1.0, {"width": 1.0},
                                    "'triangle' is triangle(width = 1)")),
    Surrogate("ste", {}, "1 (straight-through)", _ste,
              snntorch=("StraightThroughEstimator", ())),
]

SURROGATES: dict[str, Surrogate] = {s.name: s for s in _ROWS}
DEFAULT = "fast_sigmoid"

__all__ = ["DEFAULT", "SURROGATES", "NorseEquivalent", "Surrogate"]
