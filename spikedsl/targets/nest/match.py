"""Which NEST built-in a lowered neuron is: the analysis shared by every model.

A neuron layer runs on NEST only as one of NEST's own models (docs/nest.md).
:func:`match_layer` reads the lowered neuron (never the spec) and describes it
in the terms the built-ins are written in (:class:`Form`):

* the spike condition: one comparison ``v >= theta`` / ``v > theta`` on one
  state ``v`` with a threshold free of states and inputs (``hh_psc_alpha``'s
  compound condition is recognised by its own matcher);
* the reset (``v = c``, ``w += b``), the clamped states and R;
* the jumps ``s = s + c·S`` (an input ``S`` reaching a state ``s``) and the
  inputs read by the step (currents, held over the step);
* the dynamics, symbolically: the ODE system an explicit step (``euler``,
  ``rk2``, ``rk4``) was lowered from, recovered from the lowered step and
  checked by lowering it again; for ``update`` neurons, the Euler form
  ``x + dt·f(x) + c·S`` (``f`` free of ``dt``; ``S`` added after the step);
  for ``exact`` (linear) steps the affine map ``x' = A x + B u + c``,
  symbolic and numeric, as in :mod:`spikedsl.targets.nir.match`.

Each model of :mod:`spikedsl.targets.nest.models` then compares that form with
its equations (specs/neurons/nest.spk, the canonical forms), reads NEST's
parameters off the coefficients, and is checked once more numerically against
the canonical neuron of nest.spk lowered with those parameters.  A neuron no
model accepts is refused with the nearest model and the term that differs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.errors import Loc, Unsupported, unsupported
from spikedsl.ir.exprs import SpkPrinter, from_sympy, names, substitute, to_sympy
from spikedsl.lowering import refractory
from spikedsl.lowering.weights import np_eval

TITLE = "NEST"

# one NEST unit per dimension of a spec (SI values of LParam / LState): mV, pA, nS, pF, ms
NEST_UNIT = {"V": 1e-3, "A": 1e-12, "S": 1e-9, "F": 1e-12, "s": 1e-3, "1": 1.0,
             "A/s": 1e-9}  # pA/ms: hh_psc_alpha's dI


class Miss(Exception):
    """A model does not fit: ``depth`` says how far the comparison got (the
    nearest model is the one that got furthest), ``reason`` the difference."""

    def __init__(self, depth: int, reason: str):
        super().__init__(reason)
        self.depth = depth
        self.reason = reason


def fmt(e) -> str:
    """SymPy or IR expression -> .spk text (for messages)."""
    if isinstance(e, ir.Node):
        return SpkPrinter()(e)
    try:
        return SpkPrinter()(from_sympy(e))
    except Exception:
        return str(e)


def inline(stmts_temps, stmts) -> dict[str, ir.Expr]:
    """target -> value with the temporaries substituted."""
    mapping: dict[str, ir.Expr] = {}
    for t in stmts_temps:
        mapping[t.target] = substitute(t.value, mapping)
    return {u.target: substitute(u.value, mapping) for u in stmts}


def _dump(a: ir.Assign) -> tuple:
    from spikedsl.lowering.neuron import dump_noloc

    return a.target, dump_noloc(a.value)


@dataclass
class Form:
    """A lowered neuron layer described for the comparison with NEST's models."""

    neuron: ir.LNeuron
    layer: str
    shape: tuple[int, ...]
    loc: Loc | None
    env: dict[str, np.ndarray]  # parameter values (per neuron where given), and dt
    h_ms: float  # the step in ms
    time_ms: float  # ms per time unit of the neuron (1000 with units)
    states: list[str]
    spike_inputs: dict[str, tuple[str, object]] = field(default_factory=dict)  # S -> (s, coef)
    currents: list[str] = field(default_factory=list)  # inputs read by the step
    sets: dict[str, ir.Expr] = field(default_factory=dict)  # jumps `s = expr` of other kinds
    v: str | None = None  # the state of the spike condition
    theta: np.ndarray | None = None  # its threshold (the neuron's units)
    spike_op: str = ">="
    reset: list[ir.Assign] = field(default_factory=list)
    syms: dict = field(default_factory=dict)
    rhs: dict[str, object] | None = None  # state -> SymPy dx/dt (explicit, update)
    end_inputs: dict[str, tuple[str, object]] = field(default_factory=dict)  # update form
    used: set[str] = field(default_factory=set)  # inputs some projection drives

    @property
    def R(self) -> int:
        return refractory.of(self.neuron).steps

    def num(self, e) -> np.ndarray:
        """A SymPy or IR expression of the parameters, evaluated per neuron."""
        if not isinstance(e, ir.Node):
            e = from_sympy(e)
        with np.errstate(all="ignore"):
            return np.broadcast_to(np.asarray(np_eval(e, self.env), dtype=np.float64),
                                   self.shape).copy()

    def dim(self, name: str) -> str:
        n = self.neuron
        for s in n.states:
            if s.name == name:
                return s.dim
        for i, d in zip(n.inputs, n.input_dims or ()):
            if i == name:
                return d
        for p in n.params:
            if p.name == name:
                return p.dim
        return "1"

    def scale(self, name: str) -> float | None:
        """NEST units per unit of a state or input, known from its dimension
        (volts -> mV, amperes -> pA, siemens -> nS); None when dimensionless."""
        d = self.dim(name)
        return 1.0 / NEST_UNIT[d] if d in NEST_UNIT and d != "1" else None

    def v_scale(self) -> float:
        """mV per unit of the membrane (1 for a dimensionless membrane: read as mV)."""
        return self.scale(self.v) or 1.0

    def init(self, name: str) -> np.ndarray:
        for s in self.neuron.states:
            if s.name == name:
                return self.num(s.init)
        raise KeyError(name)


# ------------------------------------------------------------------ SymPy helpers
def sym(form: Form, name: str):
    import sympy as sp

    if name not in form.syms:
        form.syms[name] = sp.Symbol(name, real=True)
    return form.syms[name]


def terms(form: Form, f) -> dict[object, object]:
    """An expression as {factor of states and inputs: coefficient of parameters}:
    ``(E_L - V)/tau + I/C`` -> ``{V: -1/tau, 1: E_L/tau, I: 1/C}``."""
    import sympy as sp

    vars_ = {sym(form, s) for s in form.states} | {sym(form, i) for i in form.neuron.inputs}
    out: dict = {}
    for t in sp.Add.make_args(sp.expand(f)):
        key, coef = [], []
        for fac in sp.Mul.make_args(t):
            (key if fac.free_symbols & vars_ else coef).append(fac)
        k, c = sp.Mul(*key), sp.Mul(*coef)
        out[k] = out.get(k, sp.Integer(0)) + c
    return {k: c for k, c in out.items() if c != 0}


# ------------------------------------------------------------------ the analysis
def _explicit_rhs(n: ir.LNeuron) -> list[ir.Expr] | None:
    """The right-hand sides an euler / rk2 / rk4 step was lowered from (its
    first-stage temporaries), if lowering them again gives the same step."""
    from spikedsl.lowering.neuron import explicit_step

    k = len(n.updates)
    if n.method not in ("euler", "rk2", "rk4") or len(n.temps) < k:
        return None
    states = [u.target for u in n.updates]
    rhs = [t.value for t in n.temps[:k]]
    taken = {p.name for p in n.params} | set(n.state_names) | set(n.inputs) | {"dt"}
    temps, updates = explicit_step(n.method, states, rhs, set(taken))
    if [_dump(a) for a in temps] != [_dump(a) for a in n.temps] or \
            [_dump(a) for a in updates] != [_dump(a) for a in n.updates]:
        return None
    return rhs


def analyse(lay: ir.LLayer, params: dict[str, np.ndarray], h_ms: float, time_ms: float,
            file: str = "") -> Form:
    """The :class:`Form` of a neuron layer (raises :class:`Miss` at depth 0 for
    what no NEST model has: no spike, a compound condition of another kind)."""
    import sympy as sp

    n = lay.neuron
    loc = Loc(*n.source(file), 1) if n.source_line else None
    env = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    env["dt"] = np.float64(n.dt if n.dt is not None else 1.0)
    form = Form(neuron=n, layer=lay.name, shape=tuple(lay.shape), loc=loc, env=env,
                h_ms=h_ms, time_ms=time_ms, states=n.state_names,
                used={p.target_input for p in lay.projections})
    if not n.spiking:
        raise Miss(0, "it does not spike; NEST's neuron models do")
    # jumps: `s = s + c*S` for an input S (c free of states and inputs), or other sets
    ins = set(n.inputs)
    states = set(form.states)
    for j in n.jumps:
        f = to_sympy(j.value, form.syms)
        s = sym(form, j.target)
        used = names(j.value) & ins
        if len(used) == 1 and names(j.value) & states == {j.target}:
            S = sym(form, next(iter(used)))
            c = sp.diff(f, S)
            rest = sp.expand(f - c * S - s)
            if rest == 0 and not (c.free_symbols & ({sym(form, x) for x in states} | {S})):
                name = next(iter(used))
                if name in form.spike_inputs:
                    raise Miss(1, f"the input '{name}' jumps more than one state")
                form.spike_inputs[name] = (j.target, c)
                continue
        form.sets[j.target] = j.value
    stepped = set()
    for part in (n.temps, n.updates):
        for a in part:
            stepped |= names(a.value) & ins
    form.currents = [i for i in n.inputs if i in stepped]
    both = set(form.currents) & set(form.spike_inputs)
    if both:
        raise Miss(1, f"the input '{sorted(both)[0]}' is both a jump and a current")
    # the spike condition
    if n.spike_x is not None:
        x = to_sympy(n.spike_x, form.syms)
        dep = [s for s in form.states if sp.diff(x, sym(form, s)) != 0]
        if any(sp.diff(x, sym(form, i)) != 0 for i in n.inputs):
            raise Miss(1, "its spike condition reads an input")
        if len(dep) == 1:
            v = dep[0]
            k = sp.diff(x, sym(form, v))
            if not k.free_symbols & {sym(form, s) for s in form.states}:
                kn = form.num(k)
                x0 = form.num(x.subs({sym(form, v): 0}))
                if np.all(kn > 0):
                    form.v, form.theta, form.spike_op = v, -x0 / kn, n.spike_op
    form.reset = list(n.reset)
    # the dynamics
    if n.method in ("euler", "rk2", "rk4"):
        rhs = _explicit_rhs(n)
        if rhs is None:
            raise Miss(1, f"its {n.method} step mixes ODEs with update statements")
        form.rhs = {u.target: to_sympy(r, form.syms) for u, r in zip(n.updates, rhs)}
    elif n.method == "update":
        _update_form(form)
    return form


def _update_form(form: Form) -> None:
    """``update x = x + dt*f + c*S``: the Euler form, ``S`` added after the step."""
    import sympy as sp

    n = form.neuron
    dt = sym(form, "dt")
    new = inline(n.temps, n.updates)
    rhs = {}
    for s in form.states:
        if s not in new:
            continue
        u = to_sympy(new[s], form.syms)
        rest = u - sym(form, s)
        for i in n.inputs:
            c = sp.diff(u, sym(form, i))
            if c != 0 and dt not in c.free_symbols and not (
                    c.free_symbols & {sym(form, x) for x in form.states}):
                form.end_inputs[i] = (s, c)
                rest -= c * sym(form, i)
        f = sp.simplify(rest / dt)
        if dt in f.free_symbols:
            raise Miss(1, f"its update '{s} = {fmt(u)}' is not an Euler step {s} + dt·f "
                          "of an ODE (NEST's models are ODEs in time)")
        rhs[s] = f
    form.rhs = rhs
    form.currents = [i for i in form.currents if i not in form.end_inputs]


def affine(form: Form, stmts_temps, stmts) -> tuple[dict, dict, dict]:
    """The numeric affine map of a linear step: A[(s, x)], B[(s, input)], c[s]
    (per neuron), from unit vectors of states and current inputs."""
    new = inline(stmts_temps, stmts)
    shape = form.shape
    zeros = {s: np.zeros(shape) for s in form.states}
    ins0 = {i: np.zeros(shape) for i in form.neuron.inputs}

    def step(st, ins):
        e = {**form.env, **st, **ins}
        with np.errstate(all="ignore"):
            return {s: np.broadcast_to(np_eval(new[s], e), shape).astype(np.float64)
                    if s in new else st[s] for s in form.states}

    base = step(zeros, ins0)
    A, B = {}, {}
    for x in form.states:
        one = step({**zeros, x: np.ones(shape)}, ins0)
        for s in form.states:
            A[(s, x)] = one[s] - base[s]
    for i in form.currents:
        one = step(zeros, {**ins0, i: np.ones(shape)})
        for s in form.states:
            B[(s, i)] = one[s] - base[s]
    for s in form.states:
        for arr in (base[s], *(A[(s, x)] for x in form.states)):
            if not np.all(np.isfinite(arr)):
                raise Miss(2, f"the step of '{s}' is not finite for the given parameters")
    return A, B, base


# ------------------------------------------------------------------ the layer
@dataclass
class Match:
    """A neuron layer as a NEST model: parameters and states in NEST's units."""

    model: str
    layer: str
    neuron: str
    params: dict[str, object]  # NEST parameter -> value per neuron (NEST units)
    # user state -> (NEST recordables whose sum it is, NEST units per unit of the state)
    states: dict[str, tuple[tuple[str, ...], np.ndarray]]
    init: dict[str, np.ndarray]  # NEST state -> initial value (NEST units)
    jumps: dict[str, tuple[str, np.ndarray]]  # input -> (state it jumps, NEST weight per unit)
    syn: list  # the synaptic states (models.Syn), placed on NEST's two channels by the plan
    kind: str  # "delta" (jumps of V_m), "current", "conductance", "alpha": NEST's channels
    currents: dict[str, np.ndarray]  # input -> pA per unit
    lead: int  # NEST reads a spike `lead` steps before the step whose jump it is
    exact: bool  # NEST's integration is the lowered step (else: the same ODEs, NEST's solver)
    held: tuple[str, ...] = ()  # NEST states that evolve on their own: reset after the lead-in
    blockers: dict[str, object] = field(default_factory=dict)  # params that stop early spikes
    notes: list[str] = field(default_factory=list)


def refusal(name: str, loc: Loc | None, misses: dict[str, Miss]) -> Unsupported:
    """The refusal of a neuron no model accepts: the model whose comparison got
    furthest (the first of MODELS' order on a tie) and its difference."""
    model, miss = max(misses.items(), key=lambda kv: kv[1].depth)
    return unsupported(TITLE, f"neuron '{name}'",
                       f"no NEST built-in has its dynamics; the nearest is {model}: "
                       f"{miss.reason}", loc)


def match_layer(lay: ir.LLayer, params: dict[str, np.ndarray], h_ms: float, time_ms: float,
                file: str = "") -> Match:
    """The NEST model of a neuron layer, or :class:`Unsupported` naming the
    nearest built-in and the differing term."""
    from spikedsl.targets.nest.models import MODELS

    n = lay.neuron
    loc = Loc(*n.source(file), 1) if n.source_line else None
    misses: dict[str, Miss] = {}
    try:
        form = analyse(lay, params, h_ms, time_ms, file)
    except Miss as m:
        raise refusal(n.name, loc, dict.fromkeys(MODELS, m)) from None
    for name, fn in MODELS.items():
        try:
            return fn(form)
        except Miss as m:
            misses[name] = m
    raise refusal(n.name, loc, misses)


# ------------------------------------------------------------------ canonical forms
@functools.lru_cache(maxsize=1)
def _library():
    from spikedsl.frontend.program import load
    from spikedsl.resources import specs_dir

    return load(specs_dir() / "neurons" / "nest.spk")


def canonical() -> dict[str, ir.LNeuron]:
    """The neurons of specs/neurons/nest.spk, lowered (unplaced): NEST's models
    as .spk, with NEST's parameter names and defaults."""
    prog = _library()
    return {name: prog.neuron(name) for name in prog.neurons}


@functools.lru_cache(maxsize=1)
def _parsed() -> dict[str, ir.Neuron]:
    """nest.spk parsed only (no checks, no lowering): the text of its equations
    for messages, quickly."""
    from spikedsl.errors import Collector
    from spikedsl.frontend.build import build_module
    from spikedsl.frontend.parse import parse_text
    from spikedsl.resources import specs_dir

    path = specs_dir() / "neurons" / "nest.spk"
    errors = Collector()
    tree = parse_text(path.read_text(encoding="utf-8"), str(path), errors)
    return {n.name: n for n in build_module(tree, str(path), errors).neurons}


def canonical_text(model: str, state: str) -> str:
    """``dV_m/dt = ...`` of a canonical neuron, as written in nest.spk."""
    nrn = _parsed()[model]
    for o in nrn.odes:
        if o.state == state:
            return f"d{state}/dt = {fmt(o.rhs)}"
    for u in nrn.updates:
        if u.target == state:
            return f"{state} = {fmt(u.value)}"
    return state


def check_against_canonical(form: Form, model: str, pairs: list[tuple[str, str, np.ndarray]],
                            cparams: dict[str, object], currents: dict[str, np.ndarray],
                            rhs: bool, seed: int = 0) -> None:
    """The last word: the canonical neuron of nest.spk with the parameters read
    off equals the neuron at random states: its step (``exact`` / ``update``
    neurons) or its ODE right-hand sides (explicit methods: NEST integrates the
    ODEs with its own solver).  ``pairs``: (state of the neuron, state of the
    canonical neuron, NEST units per unit); ``cparams`` NEST parameter values;
    ``currents`` pA per unit of each current input.  Raises :class:`Miss`."""
    from spikedsl.lowering.neuron import place

    canon = canonical()[model]
    dt = form.h_ms * 1e-3 if canon.uses_units else form.h_ms
    canon = refractory.declared(place(canon, dt, "s" if canon.uses_units else None))
    cdims = {st.name: st.dim for st in canon.states}
    cenv: dict[str, object] = {"dt": np.float64(canon.dt)}
    for p in canon.params:
        v = cparams.get(p.name)
        cenv[p.name] = (np.asarray(p.value) if v is None else
                        np.asarray(v, dtype=np.float64) * NEST_UNIT.get(p.dim, 1.0))
    rng = np.random.default_rng(seed)
    shape = form.shape
    vals: dict[str, np.ndarray] = {}
    for s in form.states:  # random states: the membrane around its threshold
        base = form.init(s)
        if s == form.v and form.theta is not None:
            lo = np.minimum(base, form.theta) - 0.2 * np.abs(form.theta - base) - 1e-30
            vals[s] = lo + (form.theta - lo) * rng.random(shape)
        else:
            span = np.maximum(np.abs(base), 100.0 / (form.scale(s) or 100.0))
            vals[s] = base + 0.5 * span * rng.random(shape)
    cur = {i: rng.random(shape) * 100.0 / (form.scale(i) or 100.0) for i in form.currents}
    cstate = {st.name: np.zeros(shape) for st in canon.states}
    for s, c, per in pairs:
        cstate[c] = vals[s] * per * NEST_UNIT.get(cdims[c], 1.0)
    cin = {i: np.zeros(shape) for i in canon.inputs}
    for i, rho in currents.items():
        cin["I"] = cin["I"] + cur[i] * rho * (NEST_UNIT["A"] if canon.uses_units else 1.0)
    n = form.neuron
    user_env = {**form.env, **{i: np.zeros(shape) for i in n.inputs}, **vals, **cur}
    canon_env = {**cenv, **cin, **cstate}
    if rhs:
        got = dict(zip([u.target for u in n.updates], _explicit_rhs(n) or ()))
        if n.method == "update":
            got = {s: from_sympy(f) for s, f in (form.rhs or {}).items()}
        want = dict(zip([u.target for u in canon.updates], _explicit_rhs(canon) or ()))
        if canon.method == "update":
            cform = Form(neuron=canon, layer="", shape=shape, loc=None, env={}, h_ms=0,
                         time_ms=1, states=canon.state_names)
            _update_form(cform)
            want = {s: from_sympy(f) for s, f in (cform.rhs or {}).items()}
        # per ms (NEST) from per time unit of each
        t_user = form.time_ms
        t_canon = 1e3 if canon.uses_units else 1.0
    else:
        got = inline(n.temps, n.updates)
        want = inline(canon.temps, canon.updates)
        t_user = t_canon = 1.0
    for s, c, per in pairs:
        if s not in got or c not in want:
            continue
        with np.errstate(all="ignore"):
            a = np.asarray(np_eval(got[s], user_env), dtype=np.float64) * per * NEST_UNIT.get(
                cdims[c], 1.0) / t_user
            b = np.asarray(np_eval(want[c], canon_env), dtype=np.float64) / t_canon
        a, b = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
        tol = 1e-9 * (np.abs(a) + np.abs(b)) + 1e-12 * float(np.max(np.abs(b), initial=0.0))
        if not np.all(np.abs(a - b) <= tol + 1e-300):
            what = "derivative" if rhs else "step"
            raise Miss(3, f"the {what} of '{s}' differs from {model}'s "
                          f"({canonical_text(model, c)}) at a test point "
                          f"({float(np.max(np.abs(a - b))):.3g})")


def snap(x, rel: float = 1e-12) -> np.ndarray:
    """Values a few ulps from a short decimal (1.9999999999999958 -> 2.0): parameters
    read off a step carry round-off of ~1e-15."""
    x = np.array(x, dtype=np.float64)
    uniq, inv = np.unique(x.reshape(-1), return_inverse=True)
    for i, v in enumerate(uniq):
        if v != 0 and np.isfinite(v):
            r = float(f"{v:.12g}")
            if abs(r - v) <= rel * abs(v):
                uniq[i] = r
    return uniq[inv].reshape(x.shape)


def nextafter_up(x: np.ndarray) -> np.ndarray:
    return np.nextafter(np.asarray(x, dtype=np.float64), math.inf)


__all__ = ["Form", "Match", "Miss", "NEST_UNIT", "TITLE", "affine", "analyse", "canonical",
           "check_against_canonical", "fmt", "match_layer", "terms"]
