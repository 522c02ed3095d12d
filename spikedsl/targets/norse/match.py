"""Matching a lowered neuron step to Norse primitives (docs/norse.md).

The step ``x' = A x + B I + c`` (``targets.nir.match.analyse``) is compared with the
step of each Norse cell, written with the same symbols; the Norse parameters
are then SymPy expressions of the neuron's parameters (so trainable parameters
keep their gradients).  A neuron is mapped only where the two steps are the
same function; otherwise the refusal names the term that differs.

| lowered step (states)                              | Norse                         |
|----------------------------------------------------|-------------------------------|
| ``v' = a v + b I + c``, spiking                    | ``LIFBoxCell`` (input ``b/(1-a) I``) |
| ``v' = v + b I``, spiking                          | ``IAFCell`` (input ``b I``)   |
| ``v' = a v + b I + c``, no spike                   | ``LIBoxCell``                 |
| ``i' = a_s (i + s I)``, ``v' = a_m v + (1-a_m)(v_leak + i + s I)`` | ``LIFCell`` / ``LICell`` |
| ``i' = a_s i + b_s I``, ``v' = a_m v + (1-a_m)(v_leak + r i')``    | ``LIBoxCell`` -> ``LIFBoxCell`` / ``LIBoxCell`` |

Jumps are part of the step (``jump i += I`` followed by an Euler step is exactly
Norse's ``lif_feed_forward_step``: ``i_jump = i + I``, ``v += dt/tau_mem (v_leak - v
+ i_jump)``, ``i = i_jump - dt/tau_syn i_jump``, then the spike and the reset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikedsl import ir
from spikedsl.ir.exprs import SpkPrinter
from spikedsl.ir.surrogates import SURROGATES
from spikedsl.targets.nir.match import Analysis, fmt


@dataclass
class NorseNeuron:
    kind: str  # LIFBox IAF LIBox LIF LI SynLIFBox SynLIBox
    spiking: bool
    v: str
    syn: str | None
    p: dict[str, object]  # Norse parameter -> SymPy expression of the neuron's parameters
    reset: str = "value"  # value | subtract
    detach: bool = False
    ge: bool = False  # spike on v >= v_th (Norse fires on v > v_th)
    method: str = "super"
    alpha: float = 100.0
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ surrogates
def surrogate_norse(s: ir.LSurrogate) -> tuple[str, float] | None:
    """(Norse threshold method, alpha) with exactly the same derivative, or None."""
    row = SURROGATES[s.name]
    eq = row.norse
    if eq is None:
        return None
    args = {**row.defaults, **s.args}
    if all(float(args.get(k, 0.0)) == v for k, v in eq.when.items()):
        return eq.method, eq.alpha
    return None


def norse_equivalents() -> str:
    """What the Norse threshold methods are in spikedsl's terms (for messages)."""
    return ", ".join(r.norse.note for r in SURROGATES.values() if r.norse is not None)


def surrogate_text(s: ir.LSurrogate) -> str:
    args = ", ".join(f"{k} = {v:g}" for k, v in sorted(s.args.items()))
    return f"{s.name}({args})"


# ------------------------------------------------------------------ helpers
def _eq(an: Analysis, e1, e2, n1, n2) -> bool:
    """Symbolic equality, else equality on the actual parameter values."""
    try:
        import sympy as sp

        if sp.simplify(e1 - e2) == 0:
            return True
    except Exception:
        pass
    return bool(np.allclose(n1, n2, rtol=1e-12, atol=1e-15))


def match_norse(an: Analysis, dt_cell: float, allow_approx: bool = False,
                forward_only: bool = False) -> NorseNeuron:
    """``forward_only``: the module is only run forward (no gradients), so the
    surrogate does not matter."""
    import sympy as sp

    n = an.neuron  # one or two states, no refractory period (spikedsl.targets)
    if n.spike_cond is not None:
        raise an.refuse(f"its spike condition '{SpkPrinter()(n.spike_cond)}' joins "
                        "comparisons with and/or; Norse's cells spike on one threshold")
    S = an.states
    spiking = n.spiking and an.v is not None
    notes: list[str] = []
    one = sp.Integer(1)
    dtc = sp.Float(dt_cell) if dt_cell != int(dt_cell) else sp.Integer(int(dt_cell))
    P: dict[str, object] = {}
    if len(S) == 1:
        v = S[0]
        a, b, c = an.A[(v, v)], an.B[v], an.c[v]
        an_, cn = an.An[(v, v)], an.cn[v]
        if an.is_one(a, an_):
            if not an.is_zero(c, cn):
                raise an.refuse(f"its step adds '{fmt(c)}' without a leak; Norse's IAFCell "
                                "has no constant drive")
            if not spiking:
                raise an.refuse("it integrates without leak or spike; Norse has no such cell")
            kind, syn = "IAF", None
            P["scale"] = b
        else:
            if np.any(an_ == 1):
                raise an.refuse("some neurons of the layer leak and others do not")
            kind, syn = ("LIFBox" if spiking else "LIBox"), None
            P["tau_mem_inv"] = (one - a) / dtc
            P["v_leak"] = c / (one - a)
            P["scale"] = b / (one - a)
    else:  # two states
        v, s = an.membrane_and_current(S, spiking, "Norse's cells have")
        if not an.is_zero(an.A[(s, v)], an.An[(s, v)]):
            raise an.refuse(f"the step of '{s}' contains the term '{fmt(an.A[(s, v)] * sp.Symbol(v))}';"
                            f" in Norse's cells the current does not read the membrane")
        if not an.is_zero(an.c[s], an.cn[s]):
            raise an.refuse(f"the step of '{s}' contains the constant '{fmt(an.c[s])}'; Norse's "
                            "currents decay to 0")
        a_s, a_m, Bs, Bv, Avs, cv = (an.A[(s, s)], an.A[(v, v)], an.B[s], an.B[v],
                                     an.A[(v, s)], an.c[v])
        n_as, n_am, n_Bs, n_Bv, n_Avs = (an.An[(s, s)], an.An[(v, v)], an.Bn[s], an.Bn[v],
                                         an.An[(v, s)])
        if np.any(n_as == 1) or np.any(n_am == 1):
            raise an.refuse("a state does not leak; Norse's current-based cells leak both")
        if np.any(n_Bs == 0):
            raise an.refuse(f"the input does not reach the current '{s}'")
        syn = s
        # Norse LIFCell / LICell: the current jumps by the input, the membrane reads the
        # jumped current, the stored current is the decayed one
        lifcell = _eq(an, Avs, one - a_m, n_Avs, 1 - n_am) and \
            _eq(an, Bv * a_s, Bs * (one - a_m), n_Bv * n_as, n_Bs * (1 - n_am))
        # LIBoxCell -> LIFBoxCell: the membrane reads the new current
        semi = (not an.is_zero(Bv, n_Bv)) and _eq(an, Avs * Bs, Bv * a_s, n_Avs * n_Bs,
                                                   n_Bv * n_as)
        P["tau_mem_inv"] = (one - a_m) / dtc
        P["tau_syn_inv"] = (one - a_s) / dtc
        P["v_leak"] = cv / (one - a_m)
        if lifcell:
            kind = "LIF" if spiking else "LI"
            P["scale"] = Bv / (one - a_m)
        elif semi:
            kind = "SynLIFBox" if spiking else "SynLIBox"
            P["scale"] = Bs / (one - a_s)
            P["mid_scale"] = Bv / ((one - a_m) * Bs)
        else:
            want = (one - a_m) * Avs * Bs / a_s if not an.is_zero(a_s, n_as) else None
            if an.is_zero(Bv, n_Bv):
                raise an.refuse(
                    f"'{v}' reads the old current '{s}' and not the input (explicit Euler); "
                    f"Norse's LIFCell adds the input to the current before the membrane reads "
                    f"it (as 'jump {s} += {an.inp or 'I'}' does), so the step of '{v}' would "
                    f"need an input term '"
                    f"{fmt((Avs * Bs / a_s) * sp.Symbol(an.inp or 'I')) if want is not None else '?'}'")
            raise an.refuse(
                f"the input enters the step of '{v}' as '{fmt(Bv * sp.Symbol(an.inp or 'I'))}', "
                f"but Norse's LIFCell (or LIBoxCell -> LIFBoxCell) would need "
                f"'{fmt((Avs * Bs / a_s) * sp.Symbol(an.inp or 'I'))}' "
                f"given its current term '{fmt(Avs * sp.Symbol(s))}'")
    out = NorseNeuron(kind=kind, spiking=spiking, v=v, syn=syn, p=P, notes=notes)
    if spiking:
        out.ge = n.spike_op == ">="
        P["v_th"] = an.threshold_sym
        detach = n.reset_detach
        if an.reset_op == "=" and not an.reset_reads_states:
            P["v_reset"] = an.reset_sym
            out.reset = "value"
        elif an.reset_op == "-=" and _eq(an, an.reset_sym, an.threshold_sym,
                                          np.zeros(1), np.ones(1)):
            P["v_reset"] = sp.Integer(0)
            out.reset = "subtract"
        else:
            raise an.refuse(f"its reset '{an.reset_text}' is neither a reset to a value nor the "
                            "subtraction of the threshold (Norse's reset_value / "
                            "reset_subtract)")
        if kind in ("IAF", "LIF") and (out.reset != "value" or detach):
            raise an.refuse(f"Norse's {kind}Cell resets to a value with the gradient flowing "
                            f"through the spike; this neuron's reset is "
                            f"'{an.reset_text}'{' (detached)' if detach else ''}")
        out.detach = detach
        m = surrogate_norse(n.surrogate)
        if m is None:
            msg = (f"its surrogate {surrogate_text(n.surrogate)} has no Norse counterpart "
                   f"(Norse 1.1: {norse_equivalents()})")
            if not (allow_approx or forward_only):
                raise an.refuse(msg + "; allow_approx uses 'super' (gradients differ)")
            if not forward_only:
                notes.append(f"neuron '{n.name}': {msg}; using 'super' (gradients differ)")
            m = ("super", 1.0)
        out.method, out.alpha = m
    return out
