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
from spikedsl.ir.visitor import ExprVisitor
from spikedsl.lowering.weights import np_eval


def fmt(e) -> str:
    """SymPy expression -> .spk text (for messages)."""
    try:
        return SpkPrinter()(from_sympy(e))
    except Exception:
        return str(e)


def inline(n: ir.LNeuron) -> dict[str, ir.Expr]:
    """state -> its new value as one expression: the jumps (in order, each reading
    what the previous ones left), then the temporaries, substituted into the updates."""
    mapping: dict[str, ir.Expr] = {}
    for j in n.jumps:
        mapping[j.target] = substitute(j.value, mapping)
    out = {s.name: mapping.get(s.name, ir.Name(id=s.name)) for s in n.states}
    for t in n.temps:
        mapping[t.target] = substitute(t.value, mapping)
    for u in n.updates:
        out[u.target] = substitute(u.value, mapping)
    return out


def step_values(n: ir.LNeuron, env: dict, st: dict, ins: dict, shape) -> dict[str, np.ndarray]:
    """The new states of one step (no refractory, no spike), evaluated in order as
    the reference interpreter does: jumps, temporaries, updates on the old values."""
    e = {**env, **st, **ins}
    for j in n.jumps:
        e[j.target] = np.broadcast_to(np_eval(j.value, e), shape).astype(np.float64)
    jumped = {s: e[s] for s in n.state_names}
    for t in n.temps:
        e[t.target] = np_eval(t.value, e)
    out = dict(jumped)
    for u in n.updates:
        out[u.target] = np.broadcast_to(np_eval(u.value, e), shape).astype(np.float64)
    return out


# ------------------------------------------------------------------ cheap linearity test
_CONST, _AFFINE, _OTHER = 0, 1, 2


class _Linearity(ExprVisitor):
    """Structural class of an expression in the variables, without SymPy:
    ``(0, None)`` free of them, ``(1, None)`` affine, ``(2, term)`` otherwise, with
    the smallest sub-expression that is not affine.  Conservative: a product of
    affine factors that cancel is still class 2 (the caller confirms numerically)."""

    def __init__(self, classes: dict[str, tuple[int, ir.Expr | None]]):
        self.classes = classes

    def visit_num(self, e):
        return _CONST, None

    visit_str = visit_attr = visit_num

    def visit_name(self, e):
        return self.classes.get(e.id, (_CONST, None))

    def visit_neg(self, e):
        return self.visit(e.operand)

    def _join(self, e, parts, affine_ok: bool):
        worst = max(c for c, _ in parts)
        if worst == _OTHER:
            return _OTHER, next(t for c, t in parts if c == _OTHER)
        if worst == _AFFINE and not affine_ok:
            return _OTHER, e
        return worst, None

    def visit_bin(self, e):
        lc, rc = self.visit(e.left), self.visit(e.right)
        if e.op in ("+", "-"):
            return self._join(e, [lc, rc], True)
        if e.op == "*":
            return self._join(e, [lc, rc], lc[0] == _CONST or rc[0] == _CONST)
        if e.op == "/":
            return self._join(e, [lc, rc], rc[0] == _CONST)
        one = isinstance(e.right, ir.Num) and e.right.value == 1  # x ** 1
        return self._join(e, [lc, rc], one)

    def visit_call(self, e):
        parts = [self.visit(a) for a in e.args] + [self.visit(k.value) for k in e.kwargs]
        if e.func == "where" and len(parts) == 3 and parts[0][0] == _CONST:
            return self._join(e, parts[1:], True)  # a branch chosen by parameters only
        return self._join(e, parts, False)

    def visit_cmp(self, e):
        return self._join(e, [self.visit(e.left), self.visit(e.right)], False)

    visit_bool = visit_cmp

    def visit_not(self, e):
        return self._join(e, [self.visit(e.operand)], False)

    def visit_list(self, e):
        return self._join(e, [self.visit(x) for x in e.items], False)


def nonlinear_term(n: ir.LNeuron, variables: set[str]) -> tuple[str, ir.Expr] | None:
    """A state whose step is (structurally) not affine in ``variables`` and the term
    in the way, walking jumps, temporaries and updates in order (no inlining, no
    SymPy: fast on any neuron); None when every step is affine."""
    cls: dict[str, tuple[int, ir.Expr | None]] = {v: (_AFFINE, None) for v in variables}
    temps: dict[str, ir.Expr] = {}
    found: dict[str, tuple[int, ir.Expr | None]] = {}
    for j in n.jumps:
        cls[j.target] = found[j.target] = _Linearity(cls).visit(j.value)
    for t in n.temps:
        cls[t.target] = _Linearity(cls).visit(t.value)
        temps[t.target] = t.value
    for u in n.updates:
        found[u.target] = _Linearity(cls).visit(u.value)
    for s in n.state_names:  # in declaration order
        c, term = found.get(s, (_AFFINE, None))
        if c == _OTHER:
            shown = substitute(term, temps) if names(term) & set(temps) else term
            if len(SpkPrinter()(shown)) > 160:
                shown = term
            return s, shown
    return None


def term_text(term: ir.Expr) -> str:
    """A (small) term as SymPy writes it: ``v * v`` -> ``v**2``."""
    text = SpkPrinter()(term)
    if len(text) <= 160:
        try:
            return fmt(to_sympy(term, {}))
        except Exception:
            pass
    return text


def _confirmed_nonlinear(n: ir.LNeuron, state: str, env: dict, init: dict, inp: str | None,
                         shape) -> bool:
    """Second differences of the step of ``state`` along random directions from the
    initial state: not zero (or not finite) for a step that is not affine."""
    rng = np.random.default_rng(0)
    ins0 = {i: np.zeros(shape) for i in n.inputs}
    base_st = {s: init[s] for s in n.state_names}
    base_in = dict(ins0)
    for scale in (1e-1, 1e-2, 1e-3):
        d = {s: scale * (np.abs(x) + 1.0) * rng.choice((-1.0, 1.0), size=shape)
             for s, x in base_st.items()}
        if inp:
            d[inp] = scale * rng.choice((-1.0, 1.0), size=shape)
        f = []
        for k in (0.0, 1.0, 2.0):
            st = {s: base_st[s] + k * d[s] for s in base_st}
            ins = {**base_in, **({inp: k * d[inp]} if inp else {})}
            with np.errstate(all="ignore"):
                try:
                    f.append(step_values(n, env, st, ins, shape)[state])
                except Exception:
                    return True
        d2 = f[2] - 2.0 * f[1] + f[0]
        if not np.all(np.isfinite(d2)):
            return True
        size = np.abs(f[0]) + np.abs(f[1]) + np.abs(f[2])
        if np.any(np.abs(d2) > 1e-7 * size + 1e-300):
            return True
    return False


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

    def membrane_and_current(self, S: list[str], spiking: bool, cells: str) -> tuple[str, str]:
        """(membrane, current) of a two-state neuron: the spiking state is the
        membrane; without a spike, the current is the state that does not read
        the other (``cells``: the target's two-state cells, for the message)."""
        if spiking:
            v = self.v
            return v, (S[0] if S[1] == v else S[1])
        other = {S[0]: S[1], S[1]: S[0]}
        cand = [x for x in S if self.is_zero(self.A[(x, other[x])], self.An[(x, other[x])])]
        if len(cand) != 1:
            raise self.refuse(f"its two states are coupled both ways; {cells} a current "
                              "feeding a membrane")
        return other[cand[0]], cand[0]

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
    loc = Loc(*n.source(file), 1) if n.source_line else None
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
    # cheap refusals first (no SymPy): a step that is not affine, a compound spike
    nl = nonlinear_term(n, set(an.states) | ({an.inp} if an.inp else set()))
    if nl is not None and _confirmed_nonlinear(n, nl[0], env, an.init, an.inp, shape):
        s, term = nl
        how = (f"its {n.method} step" if n.method in ("exponential_euler", "rk2", "rk4")
               else "its step")
        raise an.refuse(
            f"{how} is not linear: the step of '{s}' contains the term "
            f"'{term_text(term)}', which is not linear in the states and the input "
            f"(quadratic, adaptive or otherwise nonlinear dynamics)")
    if n.spiking and n.spike_cond is not None:
        raise an.refuse(
            f"its spike condition '{SpkPrinter()(n.spike_cond)}' joins comparisons with "
            f"and/or; {target} neurons fire on one threshold of one state (v > v_th)")
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
        return step_values(n, env, st, ins, shape)

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
    dirac: bool = False  # CubaLIF/CubaLI driven by a Dirac impulse per step (a jump)


def _stays_zero(an: Analysis, x: str) -> bool:
    return (x != an.v and np.all(an.init[x] == 0) and np.all(an.Bn[x] == 0)
            and np.all(an.cn[x] == 0) and not any(a.target == x for a in an.neuron.reset)
            and all(np.all(an.An[(x, y)] == 0) for y in an.states if y != x))


def match_nir(an: Analysis, dt_s: float) -> NirNeuron:
    """Match an analysed neuron to a NIR neuron model (time in seconds)."""
    n = an.neuron
    notes: list[str] = []
    method = n.method
    # a state that starts at 0 and that nothing drives stays 0 (NEST's inhibitory
    # current when only excitatory spikes arrive): it is left out
    S = [x for x in an.states if not _stays_zero(an, x)] or list(an.states)
    for x in an.states:
        if x not in S:
            notes.append(f"{n.name}: the state '{x}' stays 0 (nothing drives it): left out")
    if len(S) > 2:
        raise an.refuse(f"it has {len(S)} states; NIR neurons have one (LIF, IF, LI, I) or two "
                        "(CubaLIF, CubaLI)")
    spiking = n.spiking and an.v is not None
    dirac = False
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
            if method in ("exact", "exponential_euler", "rk2", "rk4"):
                # (exponential Euler steps a linear one-state equation exactly)
                if not (np.all(a > 0) and np.all(a < 1)):
                    raise an.refuse(f"the decay factor of '{v}' ({fmt(sa)}) is not in (0, 1)")
                tau = -dt_s / np.log(a)
                disc = "exact"
                if method in ("rk2", "rk4"):
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
        v, s = an.membrane_and_current(S, spiking, "NIR's CubaLI is")
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
        family = {"exact": "exact", "euler": "euler", "update": "euler",
                  "exponential_euler": "exponential_euler"}.get(method)
        if family is None:
            raise an.refuse(f"its {method} step of a two-state system is neither the exact, "
                            "an exponential Euler nor an Euler step of NIR's CubaLIF")
        if family == "euler":
            tau_s, tau_m = dt_s / (1 - a_s), dt_s / (1 - a_m)
        else:
            if not (np.all(a_s > 0) and np.all(a_m > 0)):
                raise an.refuse("a decay factor is not positive")
            tau_s, tau_m = -dt_s / np.log(a_s), -dt_s / np.log(a_m)
        v_leak = cv / (1 - a_m)
        if family == "exact":
            # v' = a_m v + g r s + ...: g couples the current into the membrane over a step
            same = np.isclose(tau_s, tau_m, rtol=1e-12)
            with np.errstate(all="ignore"):
                g = np.where(same, dt_s / tau_m * a_m,
                             tau_s * (a_s - a_m) / np.where(same, 1.0, tau_s - tau_m))
        else:
            g = 1 - a_m  # v reads the current of the start of the step
        r = Avs / g
        disc = family
        jumped = any(j.target == s for j in n.jumps)
        if jumped:
            # a jump of the current at the start of the step: NIR's CubaLIF driven by a
            # Dirac impulse of area I*dt per step, which moves the current by
            # w_in*I*dt/tau_syn; the step then runs without input
            if not np.all(a_s != 0):
                raise an.refuse(f"the current '{s}' decays to 0 within one step")
            k = Bs / a_s  # the jump per unit of input
            if not close(Bv, Avs * k):
                raise an.refuse(
                    f"the input reaches '{v}' with coefficient {fmt(an.B[v])}, not only "
                    f"through the jump of '{s}' (NIR's CubaLIF with Dirac input)")
            w_in = k * tau_s / dt_s
            dirac = True
        else:
            # the input held over the step: tau_syn ds/dt = -s + w_in I
            w_in = Bs / (1 - a_s)
            dirac = False
            if family == "exact":
                bv = r * w_in * (1 - a_m) - w_in * Avs
                if not close(bv, Bv):
                    raise an.refuse(f"the input reaches '{v}' with coefficient {fmt(an.B[v])}, "
                                    "not as in the exact step of NIR's CubaLIF")
            elif family == "exponential_euler":
                if not an.is_zero(an.B[v], Bv):
                    raise an.refuse(
                        f"the input reaches '{v}' with coefficient {fmt(an.B[v])}; in the "
                        "exponential Euler step of NIR's CubaLIF only the current does")
            elif not an.is_zero(an.B[v], Bv):
                # semi-implicit Euler (snnTorch Synaptic): v reads the new current
                r = Bv / ((1 - a_m) * Bs)
                if not close(Avs, (1 - a_m) * r * a_s):
                    raise an.refuse(
                        f"'{v}' reads the current with coefficient {fmt(an.A[(v, s)])} and the "
                        f"input with {fmt(an.B[v])}; that is neither the explicit nor the "
                        "semi-implicit Euler step of NIR's CubaLIF")
                disc = "semi_implicit"
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
                     notes=notes, dirac=dirac)
