"""NEST's built-in neuron models, each as a matcher of a :class:`~.match.Form`.

A matcher compares the form's structure with its model's equations
(specs/neurons/nest.spk), reads NEST's parameters off the coefficients, in
NEST's units (mV, pA, nS, pF, ms), and checks the result against the
canonical neuron lowered with them.  It raises :class:`~.match.Miss` with the
first difference; ``depth``: 0 the number of states, 1 the spike / reset /
jump structure, 2 a term of the dynamics, 3 the integration method or a
parameter relation.

Scales.  The membrane is in mV (volts times 1000; a dimensionless membrane is
read as mV), time in ms (a dimensionless neuron counts in its own unit: the
network's step when the network's ``dt`` has a unit, else 1 ms).  A state or
an input with a dimension NEST knows (A, S) has its NEST unit (pA, nS); the
others are scaled to whatever NEST quantity they are (a current written in mV
becomes pA through the capacitance).  The capacitance, where nothing fixes
it, is NEST's default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikedsl.lowering import refractory
from spikedsl.targets.nest.match import (
    Form,
    Match,
    Miss,
    affine,
    canonical_text,
    check_against_canonical,
    fmt,
    nextafter_up,
    snap,
    sym,
    terms,
)


@dataclass
class Syn:
    """A synaptic state of the neuron (jumped by spike inputs), as one of NEST's
    two channels: ``per_unit`` NEST units per unit of the state, ``params``
    the channel's parameters without the ``_ex`` / ``_in`` suffix."""

    state: str
    per_unit: np.ndarray
    params: dict[str, np.ndarray] = field(default_factory=dict)


# ------------------------------------------------------------------ shared checks
def _threshold(form: Form, model: str) -> None:
    if form.v is None:
        n = form.neuron
        cond = fmt(n.spike_cond) if n.spike_cond is not None else (
            f"{fmt(n.spike_x)} {n.spike_op} 0")
        raise Miss(1, f"its spike condition '{cond}' is not a threshold on one state "
                      f"({model} fires on V_m >= V_th)")


def _nstates(form: Form, model: str, allowed: tuple[int, ...], what: str,
             depth: int = 0) -> None:
    k = len(form.states)
    if k not in allowed:
        raise Miss(depth, f"it has {k} state{'s' if k != 1 else ''}; {model} has {what}")


def _reset_to(form: Form, model: str, extra: dict[str, str] | None = None) -> dict:
    """The reset: ``v = c`` (c free of states), plus ``extra`` {state: op}."""
    from spikedsl.ir.exprs import to_sympy

    extra = extra or {}
    out = {}
    want = {form.v: "="} | extra
    got = {a.target: a for a in form.reset}
    for s, op in want.items():
        a = got.pop(s, None)
        if a is None:
            raise Miss(1, f"it does not reset '{s}'; {model} resets "
                          + ", ".join(f"{k} {o} ..." for k, o in want.items()))
        if a.op != op:
            raise Miss(1, f"its reset '{s} {a.op} {fmt(a.value)}' is not '{s} {op} ...' "
                          f"as in {model}")
        e = to_sympy(a.value, form.syms)
        if e.free_symbols & {sym(form, x) for x in form.states + list(form.neuron.inputs)}:
            raise Miss(1, f"its reset '{s} {a.op} {fmt(a.value)}' reads a state; {model} "
                          "resets to a constant")
        out[s] = form.num(a.value)
    if got:
        s, a = next(iter(got.items()))
        raise Miss(1, f"its reset changes '{s}' ('{s} {a.op} {fmt(a.value)}'), which {model} "
                      "does not")
    return out


def _clamp(form: Form, model: str, clamp: set[str]) -> None:
    held = refractory.of(form.neuron).held
    if form.R > 0 and set(held) != clamp:
        raise Miss(1, f"while refractory it holds {', '.join(held) or 'nothing'}; "
                      f"{model} holds {', '.join(sorted(clamp))}")


def _membrane(form: Form, model: str, allowed: tuple[int, ...], what: str) -> str:
    """The membrane state of a model with ``allowed`` numbers of states (``what``)
    that fires on a threshold of it."""
    _nstates(form, model, allowed, what)
    _threshold(form, model)
    return form.v


def _plain_reset(form: Form, model: str, extra: dict[str, str] | None = None) -> dict:
    """The reset of an integrate-and-fire model: no jump sets a state, ``v = c``
    (plus ``extra``), the membrane alone held while refractory."""
    _no_sets(form, model)
    reset = _reset_to(form, model, extra)
    _clamp(form, model, {form.v})
    return reset


def _no_sets(form: Form, model: str) -> None:
    if form.sets:
        s, e = next(iter(form.sets.items()))
        raise Miss(1, f"it sets '{s} = {fmt(e)}' at the start of the step, which {model} "
                      "does not")
    if form.end_inputs:
        i, (s, _) = next(iter(form.end_inputs.items()))
        raise Miss(1, f"it adds the input '{i}' to '{s}' after the step; {model} "
                      "receives spikes as a jump at the start of the step")


def _extra_terms(form: Form, model: str, s: str, canon_state: str,
                 allowed: set) -> dict:
    """The terms of ds/dt (explicit / update forms); a term outside ``allowed``
    (SymPy factors of states and inputs) is the difference."""
    import sympy as sp

    T = terms(form, form.rhs[s])
    for k, c in T.items():
        if k not in allowed:
            cn = form.num(c)
            if np.all(cn == 0):
                continue
            raise Miss(2, f"its d{s}/dt has the term '{fmt(sp.Mul(k, c))}', which {model}'s "
                          f"{canonical_text(model, canon_state)} has not")
    return T


def _coef(form: Form, T: dict, key) -> np.ndarray:
    c = T.get(key)
    return np.zeros(form.shape) if c is None else form.num(c)


def _v_th(form: Form, sigma: float) -> np.ndarray:
    th = snap(form.theta * sigma)
    return nextafter_up(th) if form.spike_op == ">" else th


def _capacitance(form: Form, implied: list[tuple[str, str, np.ndarray]],
                 default: float) -> np.ndarray:
    """C_m (pF) implied by the first (name, dimension, C_m) whose name has that
    dimension (a current in amperes, a conductance in siemens), else NEST's default."""
    for name, want, c in implied:
        if form.dim(name) == want and np.all(np.isfinite(c)) and np.all(c > 0):
            return snap(c)
    return np.full(form.shape, default)


def _iaf_params(form: Form, sigma: float, c_v, a, C, tau, reset_v) -> dict[str, np.ndarray]:
    """The parameters of NEST's iaf_psc models from the exact membrane step
    ``v' = a·v + c_v + ...`` (time constant ``tau`` in steps, capacitance ``C``)."""
    params = {
        "E_L": sigma * c_v / (1 - a), "C_m": C, "tau_m": tau * form.time_ms,
        "t_ref": np.full(form.shape, form.R * form.h_ms), "V_th": _v_th(form, sigma),
        "V_reset": sigma * reset_v, "I_e": np.zeros(form.shape),
    }
    if not np.all(params["V_reset"] < params["V_th"]):
        raise Miss(3, "its reset value is not below its threshold (NEST requires V_reset < V_th)")
    return params


def _need_explicit(form: Form, model: str) -> None:
    if form.rhs is None:
        raise Miss(3, f"method {form.neuron.method}: {model}'s equations are not linear, NEST "
                      "integrates them with its own solver; write them as ODEs with an explicit "
                      "method (rk4)")


def _spike_syn(form: Form, model: str, syn_states: list[str]) -> dict[str, tuple[str, object]]:
    for i, (s, _) in form.spike_inputs.items():
        if s not in syn_states:
            raise Miss(1, f"its input '{i}' jumps '{s}'; {model} receives spikes in its "
                          "synaptic " + ("currents" if "psc" in model else "conductances"))
    return form.spike_inputs


def _jumps(form: Form, syns: dict[str, Syn]) -> dict[str, tuple[str, np.ndarray]]:
    """input -> (state, NEST units per unit of input) of every spike input."""
    return {i: (s, syns[s].per_unit * form.num(c)) for i, (s, c) in form.spike_inputs.items()}


def _zero_init(form: Form, model: str, states: list[str]) -> None:
    for s in states:
        if np.any(form.init(s) != 0):
            raise Miss(3, f"'{s}' starts at {fmt(next(x.init for x in form.neuron.states if x.name == s))};"
                          f" NEST's {model} starts its synaptic states at 0")


# NEST's two synaptic channels per kind of model: the canonical state (nest.spk),
# NEST's recordable, the parameters of the channel
CHANNELS = {
    "current": {c: {"state": f"I_syn_{c}", "record": f"I_syn_{c}",
                    "params": {"tau_syn": f"tau_syn_{c}"}} for c in ("ex", "in")},
    "conductance": {c: {"state": f"g_{c}", "record": f"g_{c}",
                        "params": {"tau_syn": f"tau_syn_{c}", "E": f"E_{c}"}} for c in ("ex", "in")},
    "alpha": {c: {"state": f"dI_{c}", "record": None, "I_state": f"I_{c}",
                  "I_record": f"I_syn_{c}", "params": {"tau_syn": f"tau_syn_{c}"}}
              for c in ("ex", "in")},
}
# NEST recordable -> state of the canonical neuron (where the names differ)
CANON_STATE = {"Act_m": "m", "Inact_h": "h", "Act_n": "n"}


def channel_params(kind: str, placed: dict[str, Syn]) -> dict[str, np.ndarray]:
    """NEST parameters of the channels: {"ex": Syn, "in": Syn} -> tau_syn_ex, E_ex, ..."""
    out = {}
    for ch, syn in placed.items():
        for k, name in CHANNELS[kind][ch]["params"].items():
            out[name] = syn.params[k]
    return out


def _finish(form: Form, m: Match, rhs: bool) -> Match:
    """Round the parameters read off (:func:`~.match.snap`; not the thresholds,
    nor the factors of weights and states) and compare with the canonical
    neuron, the synaptic states on ex then in."""
    for k, v in m.params.items():
        if k not in ("V_th", "V_peak") and isinstance(v, np.ndarray):
            m.params[k] = snap(v)
    for syn in m.syn:
        syn.params = {k: snap(v) if isinstance(v, np.ndarray) and not k.startswith("_") else v
                      for k, v in syn.params.items()}
    pairs = [(s, CANON_STATE.get(names[0], names[0]), per) for s, (names, per) in m.states.items()]
    cparams = dict(m.params)
    if m.syn:
        placed = dict(zip(("ex", "in"), m.syn))
        cparams.update(channel_params(m.kind, placed))
        for ch, syn in placed.items():
            info = CHANNELS[m.kind][ch]
            pairs.append((syn.state, info["state"], syn.per_unit))
            if "I_state" in info:
                pairs.append((syn.params["_I"], info["I_state"], syn.params["_per_I"]))
    check_against_canonical(form, m.model, pairs, cparams, m.currents, rhs=rhs)
    return m


# ------------------------------------------------------------------ iaf_psc_delta
def iaf_psc_delta(form: Form, **_) -> Match:
    M = "iaf_psc_delta"
    v = _membrane(form, M, (1,), "one (V_m)")
    _spike_syn(form, M, [v])
    reset = _plain_reset(form, M)
    n = form.neuron
    if form.rhs is not None:
        _extra_terms(form, M, v, "V_m", {1, sym(form, v)} | {sym(form, i) for i in form.currents})
    if n.method != "exact":
        raise Miss(3, f"method {n.method}: NEST's {M} integrates exactly (write method exact)")
    A, B, c = affine(form, n.temps, n.updates)
    a = A[(v, v)]
    if not (np.all(a > 0) and np.all(a < 1)):
        raise Miss(2, f"'{v}' does not decay (decay factor {float(np.min(a)):g}); {M}'s "
                      f"{canonical_text(M, 'V_m')} does")
    dt = float(form.env["dt"])
    tau = -dt / np.log(a)
    sigma = form.v_scale()
    beta = {i: B[(v, i)] / (tau * (1 - a)) for i in form.currents}
    C = _capacitance(form, [(i, "A", form.time_ms * 1e12 / (sigma * b))
                            for i, b in beta.items()], 250.0)
    params = _iaf_params(form, sigma, c[v], a, C, tau, reset[v])
    # NEST adds a spike after the propagation; the jump comes before it: a weight
    # decayed over the step lands on the same value (docs/nest.md)
    jumps = {i: (s, sigma * form.num(k) * a) for i, (s, k) in form.spike_inputs.items()}
    m = Match(model=M, layer=form.layer, neuron=n.name, params=params,
              states={v: (("V_m",), np.full(form.shape, sigma))},
              init={"V_m": sigma * form.init(v)}, jumps=jumps, syn=[], kind="delta",
              currents={i: sigma * b * C / form.time_ms for i, b in beta.items()},
              lead=0, exact=True, held=("V_m",), blockers={"V_th": 1e300})
    return _finish(form, m, rhs=False)


# ------------------------------------------------------------------ iaf_psc_exp
def iaf_psc_exp(form: Form, **_) -> Match:
    M = "iaf_psc_exp"
    v = _membrane(form, M, (2, 3), "three (V_m, I_syn_ex, I_syn_in)")
    syn = [s for s in form.states if s != v]
    _spike_syn(form, M, syn)
    reset = _plain_reset(form, M)
    n = form.neuron
    if form.rhs is not None:
        allowed = {1, sym(form, v)} | {sym(form, s) for s in syn} | {
            sym(form, i) for i in form.currents}
        _extra_terms(form, M, v, "V_m", allowed)
        for s in syn:
            _extra_terms(form, M, s, "I_syn_ex", {sym(form, s)})
    if n.method != "exact":
        raise Miss(3, f"method {n.method}: NEST's {M} integrates exactly (write method exact)")
    A, B, c = affine(form, n.temps, n.updates)
    dt = float(form.env["dt"])
    for s in syn:
        for x in form.states:
            if x != s and np.any(A[(s, x)] != 0):
                raise Miss(2, f"the step of '{s}' reads '{x}'; {M}'s "
                              f"{canonical_text(M, 'I_syn_ex')} reads only itself")
        for i in form.currents:
            if np.any(B[(s, i)] != 0):
                raise Miss(2, f"the current '{i}' reaches '{s}'; in {M} it reaches V_m only")
        if np.any(c[s] != 0):
            raise Miss(2, f"'{s}' has a constant drive; {M}'s synaptic currents decay to 0")
        if not (np.all(A[(s, s)] > 0) and np.all(A[(s, s)] < 1)):
            raise Miss(2, f"'{s}' does not decay; {M}'s {canonical_text(M, 'I_syn_ex')} does")
    am = A[(v, v)]
    if not (np.all(am > 0) and np.all(am < 1)):
        raise Miss(2, f"'{v}' does not decay; {M}'s {canonical_text(M, 'V_m')} does")
    tau_m = -dt / np.log(am)
    sigma = form.v_scale()
    alpha, tau_s = {}, {}
    for s in syn:
        a_s = A[(s, s)]
        tau_s[s] = -dt / np.log(a_s)
        same = np.isclose(tau_m, tau_s[s], rtol=1e-12, atol=0)
        with np.errstate(all="ignore"):
            G = np.where(same, dt * am, tau_m * tau_s[s] / np.where(same, 1.0, tau_m - tau_s[s])
                         * (am - a_s))
        alpha[s] = A[(v, s)] / G
        if np.any(alpha[s] == 0):
            raise Miss(2, f"'{s}' does not reach '{v}'")
    beta = {i: B[(v, i)] / (tau_m * (1 - am)) for i in form.currents}
    implied = [(s, "A", form.time_ms * 1e12 / (sigma * alpha[s])) for s in syn] + [
        (i, "A", form.time_ms * 1e12 / (sigma * b)) for i, b in beta.items()]
    C = _capacitance(form, implied, 250.0)
    syns = {s: Syn(s, sigma * alpha[s] * C / form.time_ms, {"tau_syn": tau_s[s] * form.time_ms})
            for s in syn}
    _zero_init(form, M, syn)
    params = _iaf_params(form, sigma, c[v], am, C, tau_m, reset[v])
    m = Match(model=M, layer=form.layer, neuron=n.name, params=params,
              states={v: (("V_m",), np.full(form.shape, sigma))},
              init={"V_m": sigma * form.init(v)}, jumps=_jumps(form, syns),
              syn=list(syns.values()), kind="current",
              currents={i: sigma * b * C / form.time_ms for i, b in beta.items()},
              lead=1, exact=True, held=("V_m",), blockers={"V_th": 1e300})
    return _finish(form, m, rhs=False)


# ------------------------------------------------------------------ conductance based
def _conductance_states(form: Form, M: str, other: list[str]) -> list[str]:
    """The conductances of iaf_cond_exp / aeif_cond_exp: the states other than the
    membrane and ``other``; the spike inputs must reach them."""
    syn = [s for s in form.states if s != form.v and s not in other]
    _spike_syn(form, M, syn)
    return syn


def iaf_cond_exp(form: Form, **_) -> Match:
    M = "iaf_cond_exp"
    v = _membrane(form, M, (2, 3), "three (V_m, g_ex, g_in)")
    V = sym(form, v)
    syn = _conductance_states(form, M, [])
    reset = _plain_reset(form, M)
    _need_explicit(form, M)
    allowed = {1, V} | {sym(form, s) for s in syn} | {sym(form, s) * V for s in syn} | {
        sym(form, i) for i in form.currents}
    T = _extra_terms(form, M, v, "V_m", allowed)
    Ts = {s: _extra_terms(form, M, s, "g_ex", {sym(form, s)}) for s in syn}
    return _conductances(form, M, T, Ts, syn, reset, default_c=250.0, extra={})


def _conductances(form: Form, M: str, T: dict, Ts: dict, syn: list[str], reset: dict,
                  default_c: float, extra: dict) -> Match:
    v = form.v
    V = sym(form, v)
    sigma, tu = form.v_scale(), form.time_ms
    gl_c = -_coef(form, T, V) / tu  # g_L / C_m per ms (V in mV)
    gv = {s: _coef(form, T, sym(form, s) * V) for s in syn}
    for s in syn:
        if np.any(gv[s] >= 0):
            raise Miss(2, f"'{s}' does not act as a conductance on '{v}' (no term "
                          f"-{s}·{v} in d{v}/dt); {M}'s {canonical_text(M, 'V_m')}")
    beta = {i: _coef(form, T, sym(form, i)) for i in form.currents}
    implied = [(s, "S", -tu * 1e9 / gv[s]) for s in syn]
    implied += [(i, "A", tu * 1e12 / (sigma * b)) for i, b in beta.items()]
    C = extra["C"] if "C" in extra else _capacitance(form, implied, default_c)
    syns = {}
    for s in syn:
        tau = -1.0 / _coef(form, Ts[s], sym(form, s))
        if not np.all(tau > 0):
            raise Miss(2, f"'{s}' does not decay; {M}'s {canonical_text(M, 'g_ex')} does")
        E = sigma * _coef(form, T, sym(form, s)) / -gv[s]
        syns[s] = Syn(s, -gv[s] * C / tu, {"tau_syn": tau * tu, "E": E})
    _zero_init(form, M, syn)
    g_L = gl_c * C
    params = {"C_m": C, "g_L": g_L, "t_ref": np.full(form.shape, form.R * form.h_ms),
              "V_reset": sigma * reset[v], "I_e": np.zeros(form.shape)}
    const = _coef(form, T, 1) * sigma / tu  # (g_L E_L + I_e) / C_m
    params.update(extra.get("params", {}))
    if "E_L" in params:  # fixed elsewhere (aeif: by the adaptation): the rest is I_e
        params["I_e"] = const * C - g_L * params["E_L"]
    else:
        with np.errstate(all="ignore"):
            params["E_L"] = np.where(g_L != 0, const * C / np.where(g_L != 0, g_L, 1.0), 0.0)
        params["I_e"] = np.where(g_L != 0, 0.0, const * C)
    if "V_peak" not in extra.get("params", {}):
        params["V_th"] = _v_th(form, sigma)
        if not np.all(params["V_reset"] < params["V_th"]):
            raise Miss(3, "its reset value is not below its threshold (NEST requires "
                          "V_reset < V_th)")
    states = {v: (("V_m",), np.full(form.shape, sigma))}
    init = {"V_m": sigma * form.init(v)}
    for s, (names, per) in extra.get("states", {}).items():
        states[s] = (names, per)
        init[names[0]] = per * form.init(s)
    m = Match(model=M, layer=form.layer, neuron=form.neuron.name, params=params, states=states,
              init=init, jumps=_jumps(form, syns), syn=list(syns.values()), kind="conductance",
              currents={i: sigma * b * C / tu for i, b in beta.items()}, lead=1, exact=False,
              held=("V_m",) + tuple(r for names, _ in extra.get("states", {}).values() for r in names),
              blockers=extra.get("blockers", {"V_th": 1e300}),
              notes=[f"NEST integrates {M} with an adaptive Runge-Kutta-Fehlberg (4, 5) solver; "
                     f"the lowered {form.neuron.method} step is the same ODEs, not the same "
                     "numbers"])
    return _finish(form, m, rhs=True)


def aeif_cond_exp(form: Form, **_) -> Match:
    import sympy as sp

    M = "aeif_cond_exp"
    v = _membrane(form, M, (3, 4), "four (V_m, w, g_ex, g_in)")
    V = sym(form, v)
    # NEST's aeif models read V = min(V_m, V_peak) in their right-hand sides: the
    # bound is the built-in's own, so a spec that writes it matches
    peak = None
    for e in (form.rhs or {}).values():  # None for an exact step: refused below
        for f in e.atoms(sp.Function):
            if f.func.__name__ in ("Min", "_f_min") and V in f.args and len(f.args) == 2:
                peak = f
    if peak is not None:
        form.rhs = {s: e.subs(peak, V) for s, e in form.rhs.items()}
    # the adaptation current: the state reset with `+=`
    adds = [a.target for a in form.reset if a.op == "+=" and a.target != v]
    if len(adds) != 1:
        raise Miss(1, f"it has no adaptation state incremented at a spike ({M}: reset V_m = "
                      "V_reset; w += b)")
    w = adds[0]
    W = sym(form, w)
    syn = _conductance_states(form, M, [w])
    reset = _plain_reset(form, M, {w: "+="})
    _need_explicit(form, M)
    # the exponential term: exp(k·V) with k free of states
    T0 = terms(form, form.rhs[v])
    ex = [k for k in T0 if isinstance(k, sp.exp) and sp.diff(k.args[0], V) != 0
          and not (sp.diff(k.args[0], V).free_symbols & {sym(form, s) for s in form.states})]
    allowed = {1, V, W} | {sym(form, s) for s in syn} | {sym(form, s) * V for s in syn} | {
        sym(form, i) for i in form.currents} | set(ex)
    T = _extra_terms(form, M, v, "V_m", allowed)
    if len(ex) != 1:
        raise Miss(2, f"its d{v}/dt has no exponential term exp({v}/Delta_T) of {M}'s "
                      f"{canonical_text(M, 'V_m')}")
    Tw = _extra_terms(form, M, w, "w", {1, V, W})
    Ts = {s: _extra_terms(form, M, s, "g_ex", {sym(form, s)}) for s in syn}
    sigma, tu = form.v_scale(), form.time_ms
    k = form.num(sp.diff(ex[0].args[0], V))  # 1 / Delta_T, neuron units
    if not np.all(k > 0):
        raise Miss(2, f"its exponential term {fmt(ex[0])} does not grow with '{v}'")
    cw_v = -_coef(form, T, W)  # dv/dt has -w (per unit of w)
    if not np.all(cw_v > 0):
        raise Miss(2, f"'{w}' does not enter d{v}/dt as -{w} / C_m")
    gl_c = -_coef(form, T, V) / tu
    taw = -1.0 / _coef(form, Tw, W)  # tau_w, neuron time
    if not np.all(taw > 0):
        raise Miss(2, f"'{w}' does not decay; {M}'s {canonical_text(M, 'w')}")
    # C_m from w's dimension first (pA), then the conductances, then the currents
    beta = {i: _coef(form, T, sym(form, i)) for i in form.currents}
    gv = {s: _coef(form, T, sym(form, s) * V) for s in syn}
    implied = [(w, "A", tu * 1e12 / (sigma * cw_v))]
    implied += [(s, "S", -tu * 1e9 / gv[s]) for s in syn]
    implied += [(i, "A", tu * 1e12 / (sigma * b)) for i, b in beta.items()]
    C = _capacitance(form, implied, 281.0)
    kw = sigma * cw_v * C / tu  # pA per unit of w: dV/dt = ... - w / C_m
    g_L = gl_c * C
    a_n = _coef(form, Tw, V) * taw * kw / sigma  # dw/dt = (a (V - E_L) - w) / tau_w
    cw0 = _coef(form, Tw, 1) * taw * kw  # -a E_L
    const = _coef(form, T, 1) * sigma / tu
    with np.errstate(all="ignore"):
        E_L = np.where(a_n != 0, -cw0 / np.where(a_n != 0, a_n, 1.0),
                       const * C / np.where(g_L != 0, g_L, 1.0))
    if np.any((a_n == 0) & (cw0 != 0)):
        raise Miss(2, f"d{w}/dt has a constant drive without a coupling to '{v}'")
    Delta_T = sigma / k
    ce = _coef(form, T, ex[0]) * sigma / tu  # (g_L/C) Delta_T exp(-V_th/Delta_T), per ms
    with np.errstate(all="ignore"):
        V_th = -Delta_T * np.log(ce / (gl_c * Delta_T))
    if not np.all(np.isfinite(V_th)):
        raise Miss(2, f"its exponential term {fmt(ex[0])} is not g_L·Delta_T·exp((V_m - "
                      f"V_th)/Delta_T) / C_m of {M}")
    V_peak = _v_th(form, sigma)
    if not np.all(V_peak >= V_th):
        raise Miss(3, "its spike threshold is below V_th of the exponential term (NEST "
                      "requires V_peak >= V_th)")
    # during the lead-in no spike: V_peak as high as NEST allows (its overflow check)
    extra = {"C": C, "states": {w: (("w",), kw)}, "blockers": {"V_peak": V_th + 600 * Delta_T},
             "params": {"E_L": E_L, "Delta_T": Delta_T, "V_th": V_th, "a": a_n,
                        "b": kw * reset[w], "tau_w": taw * tu, "V_peak": V_peak}}
    return _conductances(form, M, T, Ts, syn, reset, default_c=281.0, extra=extra)


# ------------------------------------------------------------------ izhikevich
def izhikevich(form: Form, **_) -> Match:
    M = "izhikevich"
    v = _membrane(form, M, (2,), "two (V_m, U_m)")
    u = next(s for s in form.states if s != v)
    V, U = sym(form, v), sym(form, u)
    if form.spike_inputs:
        i, (s, _) = next(iter(form.spike_inputs.items()))
        raise Miss(1, f"its input '{i}' jumps '{s}' at the start of the step; {M} adds "
                      f"spikes after the Euler step (write `update {v} = {v} + dt * (...) + {i}`)")
    if form.sets:
        s, e = next(iter(form.sets.items()))
        raise Miss(1, f"it sets '{s} = {fmt(e)}' at the start of the step, which {M} does not")
    reset = _reset_to(form, M, {u: "+="})
    if form.R > 0:
        raise Miss(1, f"it has a refractory period; {M} has none")
    n = form.neuron
    if form.rhs is None or n.method not in ("update", "euler"):
        raise Miss(3, f"method {n.method}: NEST's {M} takes one Euler step on the old values "
                      "(method euler, or update statements)")
    for i, (s, _) in form.end_inputs.items():
        if s != v:
            raise Miss(1, f"its input '{i}' is added to '{s}'; {M} adds spikes to V_m")
    allowed = {1, V, V ** 2, U} | {sym(form, i) for i in form.currents}
    T = _extra_terms(form, M, v, "V_m", allowed)
    Tu = _extra_terms(form, M, u, "U_m", {V, U})
    sigma, tu = form.v_scale(), form.time_ms
    c2 = _coef(form, T, V ** 2) / (tu * sigma)
    c1 = _coef(form, T, V) / tu
    if not (np.allclose(c2, 0.04, rtol=1e-12) and np.allclose(c1, 5.0, rtol=1e-12)):
        raise Miss(2, f"its d{v}/dt = {fmt(form.rhs[v])} is not 0.04 V² + 5 V + ... (mV, ms) "
                      f"of {M}'s {canonical_text(M, 'V_m')}")
    cu = _coef(form, T, U)
    if not np.all(cu < 0):
        raise Miss(2, f"'{u}' does not enter d{v}/dt as -{u}")
    ku = -sigma * cu / tu  # NEST U_m per unit of u
    a = -_coef(form, Tu, U) / tu
    ab = _coef(form, Tu, V) * ku / (tu * sigma)
    with np.errstate(all="ignore"):
        b = np.where(a != 0, ab / np.where(a != 0, a, 1.0), 0.0)
    params = {"a": a, "b": b, "c": sigma * reset[v], "d": ku * reset[u],
              "V_th": _v_th(form, sigma), "I_e": _coef(form, T, 1) * sigma / tu - 140.0,
              "consistent_integration": True}
    currents = {i: sigma * _coef(form, T, sym(form, i)) / tu for i in form.currents}
    jumps = {i: (s, sigma * form.num(c)) for i, (s, c) in form.end_inputs.items()}
    m = Match(model=M, layer=form.layer, neuron=n.name, params=params,
              states={v: (("V_m",), np.full(form.shape, sigma)), u: (("U_m",), ku)},
              init={"V_m": sigma * form.init(v), "U_m": ku * form.init(u)}, jumps=jumps, syn=[],
              kind="delta", currents=currents, lead=0, exact=True, held=("V_m", "U_m"),
              blockers={"V_th": 1e300})
    return _finish(form, m, rhs=n.method != "update")


# ------------------------------------------------------------------ hh_psc_alpha
def hh_psc_alpha(form: Form, **_) -> Match:
    """Hodgkin-Huxley with alpha currents; the rate functions are NEST's own (fixed
    constants, checked numerically against nest.spk's hh_psc_alpha)."""
    import sympy as sp

    M = "hh_psc_alpha"
    n = form.neuron
    if form.rhs is None:
        raise Miss(0, f"method {n.method}: {M}'s equations are not linear, NEST integrates them "
                      "with its own solver; write them as ODEs with an explicit method (rk4)")
    # the membrane: the state whose derivative has the sodium (m³h) and potassium (n⁴) terms
    v, gates, T = None, {}, {}
    for cand in form.rhs:
        T = terms(form, form.rhs[cand])
        found = {}
        for k in T:
            if k == 1:
                continue
            try:
                p = sp.Poly(k, *[sym(form, x) for x in form.states])
            except sp.PolynomialError:  # e.g. min(V_m, V_peak): not a gating term
                continue
            if len(p.terms()) != 1:
                continue
            deg = {x: d for x, d in zip(form.states, p.terms()[0][0]) if d and x != cand}
            if sorted(deg.values()) == [1, 3]:
                found["m"] = next(x for x, d in deg.items() if d == 3)
                found["h"] = next(x for x, d in deg.items() if d == 1)
            elif list(deg.values()) == [4]:
                found["n"] = next(iter(deg))
        if set(found) == {"m", "h", "n"}:
            v, gates = cand, found
            break
    if v is None:
        raise Miss(0, f"it has no sodium (m³h) and potassium (n⁴) currents of {M}'s "
                      f"{canonical_text(M, 'V_m')}")
    form.v = v  # the membrane (its threshold is the peak detector)
    V = sym(form, v)
    form_depth = 2
    _nstates(form, M, (9,), "nine (V_m, m, h, n, dI_ex, I_ex, dI_in, I_in and V_last, the "
                            "membrane of the step before)", depth=form_depth)
    if n.spike_cond is None:
        raise Miss(form_depth, f"it fires on a threshold; {M} fires at the peak of an action "
                               "potential (spike V_m >= 0 mV and V_m < V_last)")
    if len(form.sets) != 1:
        raise Miss(form_depth, f"it does not remember the membrane of the step before ({M}: "
                               "jump V_last = V_m)")
    last, e = next(iter(form.sets.items()))
    from spikedsl import ir

    if not (isinstance(e, ir.Name) and e.id == v):
        raise Miss(form_depth, f"it sets '{last} = {fmt(e)}'; {M} remembers the membrane "
                               f"({last} = {v})")
    if form.reset:
        raise Miss(form_depth, f"it resets '{form.reset[0].target}'; {M} resets nothing")
    if refractory.of(n).held:
        held = ", ".join(refractory.of(n).held)
        raise Miss(form_depth, f"while refractory it holds {held}; {M} holds nothing")
    mm, hh, nn = sym(form, gates["m"]), sym(form, gates["h"]), sym(form, gates["n"])
    cur_states = [s for s in form.states if s not in (v, last, *gates.values())
                  and T.get(sym(form, s)) is not None]
    if len(cur_states) != 2:
        raise Miss(2, f"its d{v}/dt does not read two synaptic currents ({M}: I_ex + I_in)")
    allowed = {1, V, mm ** 3 * hh, mm ** 3 * hh * V, nn ** 4, nn ** 4 * V} | {
        sym(form, s) for s in cur_states} | {sym(form, i) for i in form.currents}
    T = _extra_terms(form, M, v, "V_m", allowed)
    sigma, tu = form.v_scale(), form.time_ms
    # alpha pairs: dI/dt = dI - I/tau, ddI/dt = -dI/tau
    syns, pairs = {}, {}
    for s in cur_states:
        Ts = terms(form, form.rhs[s])
        drv = [k for k in Ts if k != sym(form, s)]
        if len(drv) != 1 or str(drv[0]) not in form.states:
            raise Miss(2, f"'{s}' is not an alpha-shaped current (dI/dt = dI' - I/tau_syn)")
        d = str(drv[0])
        pairs[s] = d
        Td = _extra_terms(form, M, d, "dI_ex", {drv[0]})
        tau = -1.0 / _coef(form, Ts, sym(form, s))
        tau_d = -1.0 / _coef(form, Td, drv[0])
        if not np.allclose(tau, tau_d, rtol=1e-12):
            raise Miss(2, f"'{s}' and '{d}' decay with different time constants")
        pairs[s] = (d, tau, _coef(form, Ts, drv[0]))
    C_inv = {s: _coef(form, T, sym(form, s)) for s in cur_states}  # dv/dt per unit of I
    implied = [(s, "A", tu * 1e12 / (sigma * C_inv[s])) for s in cur_states]
    beta = {i: _coef(form, T, sym(form, i)) for i in form.currents}
    implied += [(i, "A", tu * 1e12 / (sigma * b)) for i, b in beta.items()]
    C = _capacitance(form, implied, 100.0)
    for s in cur_states:
        d, tau, link = pairs[s]
        k_i = sigma * C_inv[s] * C / tu  # pA per unit of I
        k_d = k_i * link / tu  # pA/ms per unit of dI
        syns[d] = Syn(d, k_d, {"tau_syn": tau * tu, "_I": s, "_per_I": k_i})
    for i, (s, _) in form.spike_inputs.items():
        if s not in syns:
            raise Miss(1, f"its input '{i}' jumps '{s}'; {M} receives spikes in dI_ex / dI_in")
    g_na = -_coef(form, T, mm ** 3 * hh * V) * C / tu
    g_k = -_coef(form, T, nn ** 4 * V) * C / tu
    g_l = -_coef(form, T, V) * C / tu
    with np.errstate(all="ignore"):
        E_na = sigma * _coef(form, T, mm ** 3 * hh) * C / tu / g_na
        E_k = sigma * _coef(form, T, nn ** 4) * C / tu / g_k
        E_l = sigma * _coef(form, T, 1) * C / tu / g_l
    params = {"C_m": C, "g_Na": g_na, "g_K": g_k, "g_L": g_l, "E_Na": E_na, "E_K": E_k,
              "E_L": E_l, "I_e": np.zeros(form.shape),
              "t_ref": np.full(form.shape, form.R * form.h_ms)}
    # the jump factor e / tau_syn of NEST: the spike's weight is pA
    jumps = {}
    for i, (s, c) in form.spike_inputs.items():
        syn = syns[s]
        jumps[i] = (s, syn.per_unit * form.num(c) / (np.e / syn.params["tau_syn"]))
    _zero_init(form, M, list(syns) + [syns[d].params["_I"] for d in syns])
    states = {v: (("V_m",), np.full(form.shape, sigma)),
              gates["m"]: (("Act_m",), np.ones(form.shape)),
              gates["h"]: (("Inact_h",), np.ones(form.shape)),
              gates["n"]: (("Act_n",), np.ones(form.shape))}
    init = {"V_m": sigma * form.init(v), "Act_m": form.init(gates["m"]),
            "Inact_h": form.init(gates["h"]), "Act_n": form.init(gates["n"])}
    if np.any(init["V_m"] >= 0):
        raise Miss(3, f"'{v}' starts at or above 0 mV, where {M} may fire before the start")
    m = Match(model=M, layer=form.layer, neuron=n.name, params=params, states=states,
              init=init, jumps=jumps, syn=list(syns.values()), kind="alpha",
              currents={i: sigma * b * C / tu for i, b in beta.items()}, lead=1, exact=False,
              held=("V_m", "Act_m", "Inact_h", "Act_n"), blockers={},
              notes=[f"NEST integrates {M} with an adaptive Runge-Kutta-Fehlberg (4, 5) solver"])
    return _finish(form, m, rhs=True)


MODELS = {
    "iaf_psc_delta": iaf_psc_delta,
    "iaf_psc_exp": iaf_psc_exp,
    "iaf_cond_exp": iaf_cond_exp,
    "aeif_cond_exp": aeif_cond_exp,
    "izhikevich": izhikevich,
    "hh_psc_alpha": hh_psc_alpha,
}

__all__ = ["MODELS", "Syn"]
