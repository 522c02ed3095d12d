"""Symbolic analysis of a lowered neuron step, shared by the NIR exporter and the
Norse target.

A neuron whose lowered step (temporaries inlined) is *affine* in its states
``x`` and its input ``I``::

    x' = A x + B I + c          (A, B, c free of states and input)

is matched by comparing ``A, B, c`` with the step of a NIR/Norse model, whose
parameters are then solved for in closed form and checked numerically on the
actual per-neuron values.  Affinity, the spike condition and the reset are
checked with SymPy on the lowered IR; anything else (a state-dependent
coefficient, an adaptive threshold, a subtractive reset) is reported with the
term that is in the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.errors import Loc, Unsupported, unsupported
from spikedsl.ir.exprs import SpkPrinter, from_sympy, names, substitute, to_sympy
from spikedsl.lowering.weights import np_eval


def fmt(e) -> str:
    """SymPy expression -> .spk text (for messages)."""
    try:
        return SpkPrinter()(from_sympy(e))
    except Exception:
        return str(e)


def inline(n: ir.LNeuron) -> dict[str, ir.Expr]:
    """state -> its new value as one expression (temporaries substituted)."""
    mapping: dict[str, ir.Expr] = {}
    for t in n.temps:
        mapping[t.target] = substitute(t.value, mapping)
    out = {s.name: ir.Name(id=s.name) for s in n.states}
    for u in n.updates:
        out[u.target] = substitute(u.value, mapping)
    return out


@dataclass
class Analysis:
    """The affine structure of one neuron layer's step."""

    neuron: ir.LNeuron
    shape: tuple[int, ...]
    target: str
    loc: Loc | None
    states: list[str]
    inp: str | None  # the input that projections drive (None: no projection)
    sym: dict[str, object]  # state -> SymPy update expression
    A: dict[tuple[str, str], object] = field(default_factory=dict)  # symbolic
    B: dict[str, object] = field(default_factory=dict)
    c: dict[str, object] = field(default_factory=dict)
    An: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # numeric
    Bn: dict[str, np.ndarray] = field(default_factory=dict)
    cn: dict[str, np.ndarray] = field(default_factory=dict)
    v: str | None = None  # the state in the spike condition
    threshold: np.ndarray | None = None
    threshold_sym: object = None
    v_reset: np.ndarray | None = None  # numeric, for a reset to a fixed value
    reset_op: str | None = None  # "=", "-=", "+="
    reset_sym: object = None  # the right side of the reset
    reset_reads_states: bool = False
    reset_text: str = ""
    init: dict[str, np.ndarray] = field(default_factory=dict)
    env: dict[str, np.ndarray] = field(default_factory=dict)

    def refuse(self, reason: str) -> Unsupported:
        return unsupported(self.target, f"neuron '{self.neuron.name}'", reason, self.loc)

    # symbolic tests, with a numeric fallback on the actual values
    def is_zero(self, sym_e, num_e) -> bool:
        try:
            import sympy as sp

            if sp.simplify(sym_e) == 0:
                return True
        except Exception:
            pass
        return bool(np.all(num_e == 0))

    def is_one(self, sym_e, num_e) -> bool:
        try:
            import sympy as sp

            if sp.simplify(sym_e - 1) == 0:
                return True
        except Exception:
            pass
        return bool(np.all(num_e == 1))


def analyse(lay: ir.LLayer, params: dict[str, np.ndarray], dt_value: float, target: str,
            file: str = "") -> Analysis:
    """Affine analysis of neuron layer ``lay`` (parameters already evaluated;
    ``dt_value`` is the value of the symbol ``dt`` inside the neuron)."""
    import sympy as sp

    n = lay.neuron
    loc = Loc(file, n.source_line, 1) if n.source_line else None
    used = sorted({p.target_input for p in lay.projections})
    an = Analysis(neuron=n, shape=tuple(lay.shape), target=target, loc=loc,
                  states=n.state_names, inp=used[0] if used else None, sym={})
    if len(used) > 1:
        raise an.refuse(f"it is driven through several inputs ({', '.join(used)}); "
                        f"{target} models have one input")
    shape = tuple(lay.shape)
    env = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    env["dt"] = np.float64(dt_value)
    an.env = env
    # initial values
    for s in n.states:
        try:
            an.init[s.name] = np.broadcast_to(np_eval(s.init, env), shape).astype(np.float64)
        except Exception:
            raise an.refuse(f"the initial value of '{s.name}' cannot be evaluated") from None
    new = inline(n)
    syms: dict = {}
    for s in an.states:
        syms[s] = sp.Symbol(s, real=True)
    for i in n.inputs:
        syms[i] = sp.Symbol(i, real=True)
    syms["dt"] = sp.Float(dt_value) if dt_value != int(dt_value) else sp.Integer(int(dt_value))
    vars_ = [syms[s] for s in an.states] + ([syms[an.inp]] if an.inp else [])
    zero_inputs = {syms[i]: 0 for i in n.inputs if i != an.inp}
    for s in an.states:
        try:
            f = to_sympy(new[s], syms)
        except TypeError:
            raise an.refuse(f"the update of '{s}' uses a comparison or boolean, so it is "
                            "not a linear step") from None
        f = f.subs(zero_inputs)
        an.sym[s] = f
        for u in vars_:
            d = sp.diff(f, u)
            if d.free_symbols & set(vars_) or d.has(sp.Derivative) or d.has(sp.Subs):
                bad = next((t for t in sp.Add.make_args(sp.expand(f))
                            if sp.diff(t, u).free_symbols & set(vars_)
                            or sp.diff(t, u).has(sp.Derivative)), f)
                raise an.refuse(
                    f"the step of '{s}' contains the term '{fmt(bad)}', which is not linear in "
                    f"the states and the input (quadratic, adaptive or otherwise nonlinear "
                    f"dynamics)")
        zero = {u: 0 for u in vars_}
        for x in an.states:
            an.A[(s, x)] = sp.diff(f, syms[x])
        an.B[s] = sp.diff(f, syms[an.inp]) if an.inp else sp.Integer(0)
        an.c[s] = f.subs(zero)
    # numeric coefficients on the actual parameter values (unit vectors)
    zeros = {s: np.zeros(shape) for s in an.states}
    ins0 = {i: np.zeros(shape) for i in n.inputs}

    def step(st, ins):
        e = {**env, **st, **ins}
        return {s: np.broadcast_to(np_eval(new[s], e), shape).astype(np.float64)
                for s in an.states}

    base = step(zeros, ins0)
    for s in an.states:
        an.cn[s] = base[s]
    for x in an.states:
        one = step({**zeros, x: np.ones(shape)}, ins0)
        for s in an.states:
            an.An[(s, x)] = one[s] - base[s]
    if an.inp:
        one = step(zeros, {**ins0, an.inp: np.ones(shape)})
        for s in an.states:
            an.Bn[s] = one[s] - base[s]
    else:
        for s in an.states:
            an.Bn[s] = np.zeros(shape)
    for s in an.states:
        for arr in (an.cn[s], an.Bn[s], *(an.An[(s, x)] for x in an.states)):
            if not np.all(np.isfinite(arr)):
                raise an.refuse(f"the step of '{s}' is not finite for the given parameters")
    # spike condition
    if n.spiking and n.spike_x is not None:
        x = to_sympy(n.spike_x, syms).subs(zero_inputs)
        if an.inp and sp.diff(x, syms[an.inp]) != 0:
            raise an.refuse("the spike condition reads the input")
        dep = [s for s in an.states if sp.simplify(sp.diff(x, syms[s])) != 0]
        if len(dep) != 1:
            raise an.refuse(
                f"the spike condition '{fmt(x)} {n.spike_op} 0' depends on "
                f"{' and '.join(dep) or 'no state'}; only a threshold on one state "
                f"(v >= v_th) can be expressed (adaptive thresholds cannot)")
        v = dep[0]
        k = sp.diff(x, syms[v])
        if k.free_symbols & set(vars_):
            raise an.refuse(f"the spike condition '{fmt(x)} {n.spike_op} 0' is not linear in '{v}'")
        x0 = np.broadcast_to(np_eval(n.spike_x, {**env, **zeros, **ins0}), shape)
        x1 = np.broadcast_to(np_eval(n.spike_x, {**env, **zeros, v: np.ones(shape), **ins0}),
                             shape)
        kn = x1 - x0
        if not np.all(kn > 0):
            raise an.refuse("the spike condition must increase with the membrane (v >= v_th)")
        an.v = v
        an.threshold = (-x0 / kn).astype(np.float64)
        an.threshold_sym = -x.subs({syms[s]: 0 for s in an.states}) / k
        # reset
        resets = list(n.reset)
        if not resets:
            raise an.refuse("it has no reset; NIR and Norse neurons reset the membrane to "
                            "v_reset after a spike")
        for a in resets:
            if a.target != v:
                raise an.refuse(
                    f"its reset changes '{a.target}' ('{a.target} {a.op} "
                    f"{SpkPrinter()(a.value)}'): adaptive dynamics cannot be expressed; "
                    f"only the membrane '{v}' may be reset")
        if len(resets) > 1:
            raise an.refuse(f"it resets '{v}' more than once")
        a = resets[0]
        an.reset_op = a.op
        an.reset_sym = to_sympy(a.value, syms).subs(zero_inputs)
        an.reset_reads_states = bool(names(a.value) & set(an.states))
        an.reset_text = f"{v} {a.op} {SpkPrinter()(a.value)}"
        if an.inp and names(a.value) & {an.inp}:
            raise an.refuse(f"its reset '{an.reset_text}' reads the input")
        if a.op == "=" and not an.reset_reads_states:
            an.v_reset = np.broadcast_to(np_eval(a.value, env), shape).astype(np.float64)
    return an


def solve_nonzero(x: np.ndarray) -> bool:
    return bool(np.all(np.asarray(x) != 0))


def snap(x: np.ndarray, rel: float = 1e-12) -> np.ndarray:
    """Round values that are a few ulps away from a short decimal (0.004999999999999995
    -> 0.005): parameters recovered from a step carry round-off of ~1e-16."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1).copy()
    for i, v in enumerate(flat):
        if v != 0 and np.isfinite(v):
            r = float(f"{v:.12g}")
            if abs(r - v) <= rel * abs(v):
                flat[i] = r
    return flat.reshape(x.shape)


def close(a, b, rtol=1e-9, atol=1e-12) -> bool:
    return bool(np.allclose(a, b, rtol=rtol, atol=atol))


# ------------------------------------------------------------------ NIR neuron models
@dataclass
class NirNeuron:
    kind: str  # LIF CubaLIF IF LI I CubaLI
    params: dict[str, np.ndarray]
    discretization: str  # exact | euler | semi_implicit
    v: str
    syn: str | None
    spike_op: str | None
    threshold: np.ndarray | None  # the threshold as written (before nextafter for >=)
    init: dict[str, np.ndarray]
    notes: list[str]


def match_nir(an: Analysis, dt_s: float) -> NirNeuron:
    """Match an analysed neuron to a NIR neuron model (time in seconds)."""
    n = an.neuron
    notes: list[str] = []
    method = n.method
    S = an.states
    spiking = n.spiking and an.v is not None
    if spiking and an.v_reset is None:
        raise an.refuse(f"its reset '{an.reset_text}' is not a reset to a fixed value "
                        "(subtractive reset cannot be expressed; allow_approx resets to 0)")
    if len(S) == 1:
        v = S[0]
        a, b, c = an.An[(v, v)], an.Bn[v], an.cn[v]
        sa = an.A[(v, v)]
        if an.is_one(sa, a):
            if not an.is_zero(an.c[v], c):
                raise an.refuse(f"its step adds the constant '{fmt(an.c[v])}' without a leak; "
                                "NIR's IF/I have no bias term")
            params = {"r": b / dt_s}
            kind, disc = ("IF" if spiking else "I"), "euler"
        else:
            if np.any(a == 1):
                raise an.refuse("some neurons of the layer leak and others do not")
            if method in ("exact", "rk2", "rk4"):
                if not (np.all(a > 0) and np.all(a < 1)):
                    raise an.refuse(f"the decay factor of '{v}' ({fmt(sa)}) is not in (0, 1)")
                tau = -dt_s / np.log(a)
                disc = "exact"
                if method != "exact":
                    notes.append(f"{n.name}: the {method} step is written as the LIF whose exact "
                                 "step equals it")
            else:
                if not np.all(a < 1):
                    raise an.refuse(f"the decay factor of '{v}' ({fmt(sa)}) is not below 1")
                tau = dt_s / (1 - a)
                disc = "euler"
            r = b / (1 - a)
            v_leak = c / (1 - a)
            params = {"tau": tau, "r": r, "v_leak": v_leak}
            kind = "LIF" if spiking else "LI"
        syn = None
    else:  # two states (spikedsl.targets refuses other numbers)
        if spiking:
            v = an.v
            s = S[0] if S[1] == v else S[1]
        else:
            # the synaptic state is the one that does not read the other
            cand = [x for x in S if an.is_zero(an.A[(x, S[1] if x == S[0] else S[0])],
                                               an.An[(x, S[1] if x == S[0] else S[0])])]
            if len(cand) != 1:
                raise an.refuse("its two states are coupled both ways; NIR's CubaLI is a "
                                "current feeding a membrane")
            s = cand[0]
            v = S[1] if s == S[0] else S[0]
        if not an.is_zero(an.A[(s, v)], an.An[(s, v)]):
            raise an.refuse(f"the step of '{s}' reads '{v}' (term {fmt(an.A[(s, v)])}·{v}); "
                            "in NIR's CubaLIF the current does not depend on the membrane")
        if not an.is_zero(an.c[s], an.cn[s]):
            raise an.refuse(f"the current '{s}' has a constant drive '{fmt(an.c[s])}'")
        a_s, a_m = an.An[(s, s)], an.An[(v, v)]
        Bs, Bv, Avs, cv = an.Bn[s], an.Bn[v], an.An[(v, s)], an.cn[v]
        if not solve_nonzero(Bs):
            raise an.refuse(f"the input does not reach the current '{s}'")
        if not solve_nonzero(Avs):
            raise an.refuse(f"the membrane '{v}' does not read the current '{s}'")
        if not (np.all(a_s < 1) and np.all(a_m < 1)):
            raise an.refuse("a decay factor is not below 1 (NIR's CubaLIF leaks both states)")
        if method == "exact":
            if not (np.all(a_s > 0) and np.all(a_m > 0)):
                raise an.refuse("a decay factor is not positive")
            tau_s = -dt_s / np.log(a_s)
            tau_m = -dt_s / np.log(a_m)
            w_in = Bs / (1 - a_s)
            v_leak = cv / (1 - a_m)
            same = np.isclose(tau_s, tau_m, rtol=1e-12)
            with np.errstate(all="ignore"):
                g = np.where(same, dt_s / tau_m * a_m,
                             tau_s * (a_s - a_m) / np.where(same, 1.0, tau_s - tau_m))
            r = Avs / g
            bv = r * w_in * (1 - a_m) - w_in * Avs
            if not close(bv, Bv):
                raise an.refuse(f"the input reaches '{v}' with coefficient {fmt(an.B[v])}, not "
                                "as in the exact step of NIR's CubaLIF")
            disc = "exact"
        elif method in ("euler", "update"):
            tau_s = dt_s / (1 - a_s)
            tau_m = dt_s / (1 - a_m)
            w_in = Bs / (1 - a_s)
            v_leak = cv / (1 - a_m)
            if an.is_zero(an.B[v], Bv):
                r = Avs / (1 - a_m)  # explicit Euler: v reads the old current
                disc = "euler"
            else:
                # semi-implicit Euler (snnTorch Synaptic): v reads the new current
                r = Bv / ((1 - a_m) * Bs)
                if not close(Avs, (1 - a_m) * r * a_s):
                    raise an.refuse(
                        f"'{v}' reads the current with coefficient {fmt(an.A[(v, s)])} and the "
                        f"input with {fmt(an.B[v])}; that is neither the explicit nor the "
                        "semi-implicit Euler step of NIR's CubaLIF")
                disc = "semi_implicit"
        else:
            raise an.refuse(f"its {method} step of a two-state system is neither the exact nor "
                            "an Euler step of NIR's CubaLIF")
        params = {"tau_syn": tau_s, "tau_mem": tau_m, "r": r, "v_leak": v_leak, "w_in": w_in}
        kind = "CubaLIF" if spiking else "CubaLI"
        syn = s
    thr = None
    if spiking:
        thr = an.threshold
        params["v_threshold"] = thr.copy()
        params["v_reset"] = an.v_reset.copy()
        if n.spike_op == ">=":
            # NIR (and snnTorch, Norse) fire on v > v_threshold; the largest float below
            # the threshold gives exactly the spikes of v >= v_th.
            params["v_threshold"] = np.nextafter(thr, -np.inf)
    shape = an.shape
    params = {k: snap(np.broadcast_to(np.asarray(x, dtype=np.float64), shape))
              if k not in ("v_threshold", "v_reset") else
              np.broadcast_to(np.asarray(x, dtype=np.float64), shape).copy()
              for k, x in params.items()}
    for k, x in params.items():
        if not np.all(np.isfinite(x)):
            raise an.refuse(f"its NIR parameter '{k}' is not finite")
    init = {"v": an.init[v]}
    if syn is not None:
        init["i"] = an.init[syn]
    return NirNeuron(kind=kind, params=params, discretization=disc, v=v, syn=syn,
                     spike_op=n.spike_op if spiking else None, threshold=thr, init=init,
                     notes=notes)
