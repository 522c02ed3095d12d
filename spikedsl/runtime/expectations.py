"""The ``expect`` statements of test blocks: quantities read from a run's
traces, compared with tolerances, described in the user's units
(docs/testing.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from spikedsl import ir
from spikedsl.errors import Loc
from spikedsl.frontend.program import parse_quantity
from spikedsl.ir.exprs import EvalError, SpkPrinter, evaluate


class CaseError(Exception):
    """A test block cannot be turned into a run (e.g. a drive's file is missing)."""

    def __init__(self, message: str, loc: Loc | None = None):
        super().__init__(message)
        self.loc = loc

    def render(self) -> str:
        where = f"{self.loc.file}:{self.loc.line}:{self.loc.col}: " if self.loc else ""
        return f"{where}{self}"


if TYPE_CHECKING:
    from spikedsl.runtime.testing import Case

DEFAULT_RTOL = 1e-9  # `==` without `+-`: |a - e| <= 1e-9·max(|a|, |e|) + 1e-12
DEFAULT_ATOL = 1e-12


@dataclass
class Check:
    """One evaluated ``expect`` line."""

    loc: Loc | None
    text: str  # the expect line as written
    ok: bool
    expected: str
    actual: str
    missing: str | None = None  # the trace the target did not return

    def render(self) -> str:
        where = f"{self.loc.file}:{self.loc.line}:{self.loc.col}: " if self.loc else ""
        return f"{where}{self.text}\n    expected {self.expected}, got {self.actual}"


def _num(e: ir.Expr | None, default: float | None = None) -> float | None:
    if e is None:
        return default
    try:
        return float(evaluate(e, {}))
    except EvalError:
        raise CaseError("expected a number", e.loc) from None


def _nums(e: ir.Expr) -> list:
    """A number or a (nested) list of numbers -> float or nested lists."""
    if isinstance(e, ir.ListExpr):
        return [_nums(i) for i in e.items]
    return _num(e)

# ------------------------------------------------------------------ expectations
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def _unit_of(e: ir.Expr | None) -> str | None:
    if isinstance(e, ir.Num):
        return e.unit
    if isinstance(e, ir.Neg):
        return _unit_of(e.operand)
    if isinstance(e, ir.ListExpr):
        for i in e.items:
            u = _unit_of(i)
            if u:
                return u
    if isinstance(e, ir.BinOp):
        return _unit_of(e.left) or _unit_of(e.right)
    return None


def _scale(unit: str | None) -> float:
    if not unit:
        return 1.0
    from spikedsl.ir.units import parse_unit

    try:
        return parse_unit(unit)[0]
    except ValueError:
        return 1.0


def _fmt(x: float, unit: str | None) -> str:
    if x is None:
        return "?"
    if isinstance(x, float | np.floating) and math.isinf(x):
        return "no spike" if x > 0 else "-inf"
    s = f"{x / _scale(unit):.7g}"
    return f"{s} {unit}" if unit else s


def _fmt_list(xs, unit) -> str:
    xs = list(xs)
    body = ", ".join(_fmt(float(x), unit) for x in xs[:12])
    return f"[{body}{', ...' if len(xs) > 12 else ''}]"


def _expect_text(case: Case, e: ir.Expect) -> str:
    if e.loc is not None:
        text = case.program.sources.get(e.loc.file)
        if text is not None:
            lines = text.splitlines()
            if 1 <= e.loc.line <= len(lines):
                src = lines[e.loc.line - 1]
                src = src.split("#", 1)[0].strip()
                if src.startswith("expect"):
                    return src
    from spikedsl.frontend.fmt import expect_text

    return expect_text(e, SpkPrinter())


def _compare(a: np.ndarray, op: str, e: np.ndarray, tol: float | None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if tol is None:
            finite = np.isfinite(a) & np.isfinite(e)
            t = np.where(finite, DEFAULT_RTOL * np.maximum(np.abs(np.where(finite, a, 0)),
                                                           np.abs(np.where(finite, e, 0)))
                         + DEFAULT_ATOL, 0.0)
            t_ineq = 0.0
        else:
            t = t_ineq = tol
        d = np.abs(a - e)
        d = np.where(a == e, 0.0, d)  # inf == inf
        if op == "==":
            return d <= t
        if op == "!=":
            return d > t
        if op == "<":
            return a < e + t_ineq
        if op == "<=":
            return a <= e + t_ineq
        if op == ">":
            return a > e - t_ineq
        return a >= e - t_ineq


def evaluate_expect(case: Case, e: ir.Expect, out: Mapping[str, np.ndarray],
                    target: str = "") -> Check:
    """Measure one expectation on the outputs of a run."""
    text = _expect_text(case, e)
    q = parse_quantity(e.quantity)
    assert q is not None
    key = case.traces.get(q.operand)
    if key is None or key not in out:
        return Check(e.loc, text, False, "a trace", f"no trace '{key or q.operand}' in the "
                     f"{target or 'target'} output", missing=key or q.operand)
    tr = np.asarray(out[key], dtype=np.float64)
    T = tr.shape[0]
    M = int(np.prod(tr.shape[1:])) if tr.ndim > 1 else 1
    tr = tr.reshape(T, M)
    dt = case.dt
    k = T
    if e.at is not None:
        at = _num(e.at)
        k = round(at / dt)
        if k > T:
            return Check(e.loc, text, False, f"a time within the run ({T} steps)",
                         f"at {at:g} beyond the run")
    tol = _num(e.tol) if e.tol is not None else case.tolerance
    vunit = _unit_of(e.value) or _unit_of(e.tol)
    tunit = vunit if vunit and _scale(vunit) in _TIME_UNITS.values() and case.timed \
        else (case.time_unit if case.timed else None)
    if q.func in ("first_spike", "spike_times"):
        unit = tunit
    elif q.func == "rate":
        unit = vunit or ("Hz" if case.timed else None)
    else:
        unit = vunit
    w = tr[:k]
    exp_desc = f"{e.op} "
    if q.func == "spike_times":
        expected = _nums(e.value)
        trains = [(np.nonzero(w[:, m])[0] + 1) * dt for m in range(M)]
        if M > 1 and expected and all(isinstance(x, list) for x in expected):
            exps = expected
        else:
            exps = [expected] * M
        if len(exps) != M:
            return Check(e.loc, text, False, f"{len(exps)} spike trains", f"{M} neurons")
        oks = []
        for got, want_ in zip(trains, exps):
            want_ = np.asarray(want_, dtype=np.float64).reshape(-1)
            same = len(got) == len(want_) and bool(np.all(_compare(got, "==", want_, tol)))
            oks.append(same if e.op == "==" else not same)
        ok = all(oks)
        tol_s = f" ± {_fmt(tol, unit)}" if tol is not None else ""
        exp_desc += _fmt_list(np.asarray(exps[0], dtype=float).reshape(-1), unit) + tol_s
        if M == 1:
            act = _fmt_list(trains[0], unit) + f" ({len(trains[0])} spikes)"
        else:
            bad = [i for i, o in enumerate(oks) if not o]
            act = "; ".join(f"neuron {i}: {_fmt_list(trains[i], unit)}" for i in bad[:4]) or "ok"
        return Check(e.loc, text, ok, exp_desc, act)
    # per-neuron scalars
    if q.func == "value":
        got = case.initial.get(key, np.zeros((1, M))).reshape(-1)[:M] if k == 0 else w[k - 1]
        if k == 0 and got.size != M:
            got = np.resize(got, M)
    elif q.func == "count":
        got = w.sum(axis=0)
    elif q.func == "rate":
        got = w.sum(axis=0) / (k * dt) if k else np.zeros(M)
    elif q.func == "first_spike":
        got = np.full(M, np.inf)
        for m in range(M):
            nz = np.nonzero(w[:, m])[0]
            if len(nz):
                got[m] = (nz[0] + 1) * dt
    else:
        if k == 0:
            return Check(e.loc, text, False, "a non-empty window", "no steps before 'at'")
        red = {"max": np.max, "min": np.min, "mean": np.mean, "sum": np.sum,
               "last": lambda a, axis: a[-1]}[q.func]
        got = red(w, axis=0)
    expected = np.asarray(_nums(e.value), dtype=np.float64).reshape(-1)
    if expected.size not in (1, M):
        return Check(e.loc, text, False, f"{expected.size} values", f"{M} neurons")
    ok_arr = _compare(got, e.op, expected, tol)
    ok = bool(np.all(ok_arr))
    tol_s = f" ± {_fmt(tol, unit)}" if tol is not None else ""
    if expected.size == 1:
        exp_desc += _fmt(float(expected[0]), unit) + tol_s
    else:
        exp_desc += _fmt_list(expected, unit) + tol_s
    if M == 1:
        act = _fmt(float(got[0]), unit)
    else:
        bad = np.nonzero(~ok_arr)[0]
        if ok:
            act = _fmt_list(got, unit)
        else:
            act = ", ".join(f"neuron {i}: {_fmt(float(got[i]), unit)}" for i in bad[:6])
            if len(bad) > 6:
                act += f" ({len(bad)} of {M} neurons fail)"
    if q.func != "value":
        pass
    return Check(e.loc, text, ok, exp_desc, act)
