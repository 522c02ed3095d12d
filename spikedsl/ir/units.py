"""Physical units and dimensions (docs/language.md, "Units").

A dimension is a tuple of exponents over the SI base units (m, kg, s, A).
Quantities are stored as SI floats; a unit string such as ``mV/ms`` or
``nS*mV`` is parsed here into (scale, dimension).
"""

from __future__ import annotations

import re
from fractions import Fraction

Dim = tuple[Fraction, Fraction, Fraction, Fraction]  # m, kg, s, A

BASE_NAMES = ("m", "kg", "s", "A")
ONE: Dim = (Fraction(0), Fraction(0), Fraction(0), Fraction(0))


def _d(m=0, kg=0, s=0, a=0) -> Dim:
    return (Fraction(m), Fraction(kg), Fraction(s), Fraction(a))


TIME = _d(s=1)
VOLT = _d(m=2, kg=1, s=-3, a=-1)
AMP = _d(a=1)
OHM = _d(m=2, kg=1, s=-3, a=-2)
SIEMENS = _d(m=-2, kg=-1, s=3, a=2)
FARAD = _d(m=-2, kg=-1, s=4, a=2)
HERTZ = _d(s=-1)

# unit name -> (scale to SI, dimension)
UNITS: dict[str, tuple[float, Dim]] = {
    "s": (1.0, TIME), "ms": (1e-3, TIME), "us": (1e-6, TIME), "ns": (1e-9, TIME),
    "Hz": (1.0, HERTZ), "kHz": (1e3, HERTZ),
    "V": (1.0, VOLT), "mV": (1e-3, VOLT), "uV": (1e-6, VOLT),
    "A": (1.0, AMP), "mA": (1e-3, AMP), "uA": (1e-6, AMP), "nA": (1e-9, AMP), "pA": (1e-12, AMP),
    "ohm": (1.0, OHM), "kohm": (1e3, OHM), "Mohm": (1e6, OHM), "Gohm": (1e9, OHM),
    "S": (1.0, SIEMENS), "mS": (1e-3, SIEMENS), "uS": (1e-6, SIEMENS), "nS": (1e-9, SIEMENS),
    "F": (1.0, FARAD), "uF": (1e-6, FARAD), "nF": (1e-9, FARAD), "pF": (1e-12, FARAD),
    "1": (1.0, ONE),
}

# names used when printing a dimension back to a person
_NAMED = [(ONE, "1"), (TIME, "s"), (VOLT, "V"), (AMP, "A"), (OHM, "ohm"), (SIEMENS, "S"),
          (FARAD, "F"), (HERTZ, "Hz")]

_ATOM = re.compile(r"([A-Za-z]+|1)(?:\*\*(-?[0-9]+))?")


class UnitError(ValueError):
    pass


def dmul(a: Dim, b: Dim) -> Dim:
    return tuple(x + y for x, y in zip(a, b))  # type: ignore[return-value]


def ddiv(a: Dim, b: Dim) -> Dim:
    return tuple(x - y for x, y in zip(a, b))  # type: ignore[return-value]


def dpow(a: Dim, k: Fraction | float) -> Dim:
    k = Fraction(k).limit_denominator(64)
    return tuple(x * k for x in a)  # type: ignore[return-value]


def parse_unit(text: str) -> tuple[float, Dim]:
    """``"mV/ms"`` -> (1.0, V/s).  Raises UnitError for unknown units."""
    scale, dim = 1.0, ONE
    pos, op = 0, "*"
    text = text.strip()
    while pos < len(text):
        m = _ATOM.match(text, pos)
        if not m or m.group(1) not in UNITS:
            raise UnitError(f"unknown unit '{text}'")
        s, d = UNITS[m.group(1)]
        k = int(m.group(2)) if m.group(2) else 1
        s, d = s**k, dpow(d, k)
        if op == "*":
            scale, dim = scale * s, dmul(dim, d)
        else:
            scale, dim = scale / s, ddiv(dim, d)
        pos = m.end()
        if pos < len(text):
            op = text[pos]
            if op not in "*/":
                raise UnitError(f"unknown unit '{text}'")
            pos += 1
    return scale, dim


def dim_str(d: Dim) -> str:
    """A readable (and parseable by :func:`parse_dim`) name for a dimension."""
    for nd, name in _NAMED:
        if nd == d:
            return name
    # try NAMED ** k and NAMED / TIME combinations
    for nd, name in _NAMED[1:]:
        if ddiv(d, nd) == HERTZ:
            return f"{name}/s"
        if dmul(d, nd) == ONE:
            return f"1/{name}"
        for nd2, name2 in _NAMED[1:]:
            if dmul(nd, nd2) == d:
                return f"{name}*{name2}"
    parts = []
    for e, n in zip(d, BASE_NAMES):
        if e == 0:
            continue
        parts.append(n if e == 1 else f"{n}^{e}")
    return " ".join(parts) or "1"


def parse_dim(text: str) -> Dim:
    """Inverse of :func:`dim_str`."""
    if text == "1":
        return ONE
    if text.startswith("1/"):
        return ddiv(ONE, parse_dim(text[2:]))
    if " " in text or "^" in text or text in ("m", "kg"):
        out = list(ONE)
        for part in text.split():
            n, _, e = part.partition("^")
            out[BASE_NAMES.index(n)] = Fraction(e or 1)
        return tuple(out)  # type: ignore[return-value]
    if text in ("m", "kg"):
        out = list(ONE)
        out[BASE_NAMES.index(text)] = Fraction(1)
        return tuple(out)  # type: ignore[return-value]
    return parse_unit(text.replace("ohm", "ohm"))[1]


def is_time(d: Dim) -> bool:
    return d == TIME
