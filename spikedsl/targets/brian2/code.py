"""Brian2 abstract code of one neuron's lowered step and of a synapse rule
(no brian2 import here; :mod:`spikedsl.targets.brian2.plan` places the code
in the schedule).

A neuron's step is one ``run_regularly`` block, in the order of
docs/semantics.md: the effective inputs (accumulated synaptic input plus
biases), the ``jumps`` in order, the temporaries, then every update on the
old states (committed at once).  Lowering has written every rule of the
step, a held state included, as these statements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.ir.units import ONE, Dim
from spikedsl.lowering.neuron import fresh_name
from spikedsl.targets.brian2 import printer as b2


# ----------------------------------------------------------------- neurons
@dataclass
class NeuronCode:
    step: str
    threshold: str | None
    reset: str | None
    clear: str | None  # clears the inputs after the reset (inputs read late)
    units: set[str] = field(default_factory=set)


def neuron_code(neu: ir.LNeuron, nm: dict[str, str], dims: dict[str, Dim],
                eff: dict[str, str], bias_names: dict[str, str],
                pre_vars: dict[str, str], *, stripped: bool,
                uses_input_late: bool) -> NeuronCode:
    """The step, threshold and reset code of ``neu``.  ``nm``: spec name ->
    Brian2 name; ``eff``: input -> name of its effective value (bias added)
    when it differs from the accumulator; ``pre_vars``: state -> copy before
    the reset.  Raises :class:`DimError` when the code does not check with
    units (the caller then prints it ``stripped``)."""
    dt = "dt" if neu.uses_units else repr(float(neu.dt if neu.dt is not None else 1.0))
    names_in = dict(nm)
    names_in.update(eff)
    pr = b2.B2Printer(names_in, dims, dt=dt, stripped=stripped)
    taken = (set(nm.values()) | set(eff.values()) | set(bias_names.values())
             | set(pre_vars.values()))

    def value(target: str, e: ir.Expr) -> str:
        """``e`` for an assignment to state ``target`` (dimension checked)."""
        want = dims.get(target, ONE)
        s, d = pr.expr(e)
        if stripped:
            return f"({s})*{pr.unit(want)}" if want != ONE else s
        if d != want and not (d == ONE and _is_zero(e)):
            raise b2.DimError(f"assignment to {target}")
        return pr.zero(want) if d != want else s

    lines: list[str] = []
    for i, e in eff.items():
        lines.append(f"{e} = {nm[i]} + {bias_names[i]}")
    # jumps, in order, each reading what the previous ones left
    for j in neu.jumps:
        lines.append(f"{nm[j.target]} = {value(j.target, j.value)}")
    temp_dims = dict(dims)
    pr.dims = temp_dims
    for t in neu.temps:
        s, d = _temp(pr, t.value)
        temp_dims[t.target] = d
        lines.append(f"{nm[t.target]} = {s}")
    single = len(neu.updates) == 1
    news = []
    for u in neu.updates:
        target, s = nm[u.target], value(u.target, u.value)
        if single:
            lines.append(f"{target} = {s}")
            continue
        tmp = fresh_name(f"{target}_next", taken)
        lines.append(f"{tmp} = {s}")
        news.append((u.target, target, tmp))
    for _state, target, tmp in news:
        lines.append(f"{target} = {tmp}")
    for s, v in pre_vars.items():
        lines.append(f"{v} = {nm[s]}")
    clears = []
    for i in neu.inputs:
        z = pr.zero(dims[i]) if not stripped else (
            "0.0" if dims[i] == ONE else f"0.0*{pr.unit(dims[i])}")
        clears.append(f"{nm[i]} = {z}")
    clear = None
    if uses_input_late:
        clear = "; ".join(clears)
    else:
        lines += clears
    # threshold and reset read the new states (and the temporaries' dimensions)
    pr_post = b2.B2Printer(names_in, temp_dims, dt=dt, stripped=stripped)
    threshold = reset = None
    if neu.spiking and (neu.spike_cond is not None or neu.spike_x is not None):
        if neu.spike_cond is not None:
            threshold = pr_post.cond(neu.spike_cond)
        else:
            x, d = pr_post.expr(neu.spike_x)
            threshold = f"{x} {neu.spike_op} {pr_post.zero(d)}"
        rs = [pr_post.assign(a.target, a.value, a.op) for a in neu.reset]
        reset = "\n".join(rs) if rs else None
    return NeuronCode("\n".join(lines), threshold, reset, clear, pr.units | pr_post.units)


def _is_zero(e: ir.Expr) -> bool:
    return isinstance(e, ir.Num) and e.value == 0 and not e.unit


def _temp(pr: b2.B2Printer, e: ir.Expr) -> tuple[str, object]:
    """A temporary's text and dimension; a literal zero (the derivative of a
    held state) keeps the dimension of whatever it meets."""
    if _is_zero(e):
        return "0.0", pr.POLY
    return pr.expr(e)


# ----------------------------------------------------------------- synapse rules
@dataclass
class RuleCode:
    model: list[str]  # Synapses model lines (w, rule states, parameters)
    pre: list[str]  # on_pre statements of the rule (after transmission)
    post: str | None  # on_post code
    update: str | None  # the rule's own dynamics (run_regularly)
    sets: list[tuple[str, float, Dim]]  # parameter values (name, SI value, dimension)
    inits: list[tuple[str, str]]  # initial values of the rule states (name, code)
    units: set[str] = field(default_factory=set)


def rule_code(rule: ir.LSynapse, w_dim: Dim, avoid: set[str] = frozenset()) -> RuleCode:
    """The Brian2 code of a synapse rule on a projection whose weight has
    dimension ``w_dim``; ``avoid``: names of the pre- and postsynaptic groups
    (Brian2 refuses a synaptic variable with the name of one of theirs)."""
    names = b2.Names({"w"} | set(avoid))
    nm = {"w": "w"}
    dims: dict[str, Dim] = {"w": w_dim}
    for q in rule.params:
        nm[q.name] = names.user(q.name)
        dims[q.name] = b2.dim_of(q.dim)
    for s in rule.states:
        nm[s.name] = names.user(s.name)
        dims[s.name] = b2.dim_of(s.dim)
    for t in rule.temps:
        nm[t.target] = names.user(t.target)
    units: set[str] = set()
    for stripped in (False, True):
        pr = b2.B2Printer(nm, dims, dt="dt" if rule.uses_units else repr(float(rule.dt)),
                       stripped=stripped)
        try:
            model = [f"w : {b2.unit_expr(w_dim) or '1'}"]
            for s in rule.states:
                model.append(f"{nm[s.name]} : {b2.unit_expr(dims[s.name]) or '1'}")
            for q in rule.params:
                model.append(f"{nm[q.name]} : {b2.unit_expr(dims[q.name]) or '1'} "
                             f"(shared, constant)")
            code = []
            for t in rule.temps:
                s, d = pr.expr(t.value)
                dims[t.target] = d
                code.append(f"{nm[t.target]} = {s}")
            news = []
            for u in rule.updates:
                tmp = names.fresh(f"{nm[u.target]}_next")
                s, d = pr.expr(u.value)
                if not stripped and d != dims.get(u.target, ONE):
                    raise b2.DimError("update")
                code.append(f"{tmp} = {s}" if not stripped else
                            f"{tmp} = ({s})" + (f"*{pr.unit(dims[u.target])}"
                                                if dims.get(u.target, ONE) != ONE else ""))
                news.append((nm[u.target], tmp))
            code += [f"{a} = {b}" for a, b in news]
            pre = [pr.assign(a.target, a.value, a.op) for a in rule.on_pre]
            post = [pr.assign(a.target, a.value, a.op) for a in rule.on_post]
            units |= pr.units
            for line in model:
                units |= b2.unit_names(line.split(":")[1].split("(")[0])
            break
        except b2.DimError:
            if stripped:
                raise
    # parameter values and initial states: set after the synapses exist
    sets = [(nm[q.name], q.value, dims[q.name]) for q in rule.params]
    inits = []
    for s in rule.states:
        txt, _ = pr.expr(s.init)
        if pr.stripped and dims[s.name] != ONE:
            txt = f"({txt})*{pr.unit(dims[s.name])}"
        inits.append((nm[s.name], txt))
    units |= pr.units
    return RuleCode(model, pre, "\n".join(post) if post else None,
                    "\n".join(code) if code else None, sets, inits, units)


__all__ = ["NeuronCode", "RuleCode", "neuron_code", "rule_code"]
