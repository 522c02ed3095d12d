"""One neuron layer of the torch target: its plan and its step with autograd.

Two forms of the lowered step (docs/semantics.md, steps 2b-2f):

* :func:`step_code` (here) - one step with plain autograd (the spike is a
  surrogate ``autograd.Function``); used by the step-by-step path and inside
  recurrent groups;
* :class:`spikedsl.targets.torch.scan.ScanGen` - the whole layer over T steps
  as one ``autograd.Function`` (the fast path): the forward runs the
  recurrence into preallocated buffers, the backward
  (:mod:`spikedsl.targets.torch.adjoint`) is the analytic BPTT derived with
  SymPy from the same equations.

Both read a :class:`NeuronPlan`: the lowered step with constants substituted
and subexpressions that do not depend on the states hoisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spikedsl import ir
from spikedsl.ir.exprs import names
from spikedsl.ir.visitor import children
from spikedsl.targets.torch.expr import (
    Hoister,
    Namer,
    TorchPrinter,
    fold,
    prepare,
    spk,
    statement_text,
    surrogate_code,
    surrogate_doc,
)

__all__ = ["MAX_ANALYTIC_SIZE", "NeuronPlan", "Stmt", "analytic_size", "make_plan",
           "step_code", "surrogate_code", "surrogate_doc"]

# ------------------------------------------------------------------ the plan


@dataclass
class Stmt:
    target: str
    op: str
    value: ir.Expr


@dataclass
class NeuronPlan:
    """The neuron's step with constants substituted and subexpressions hoisted."""

    neuron: ir.LNeuron
    R: int
    states: list[str]
    inputs: list[str]
    tensor_params: list[str]  # names of tensor parameters (trainable / per-neuron)
    # (kind step|static, name, expr over inputs/params), in dependency order,
    # only those the step needs (directly or through another hoisted tensor)
    hoisted: list[tuple[str, str, ir.Expr]]
    temps: list[Stmt]  # per-step temporaries
    updates: dict[str, ir.Expr]
    spike: ir.Expr | None
    resets: list[Stmt]
    inits: dict[str, ir.Expr]
    step_names: list[str]  # per-step tensors read by the loop (inputs / hoisted)
    static_names: list[str]  # static tensors read by the loop
    held: set[str] = field(default_factory=set)


def make_plan(neuron: ir.LNeuron, dt: float, R: int, tensor_params: set[str],
              mode: str) -> NeuronPlan:
    """``mode``: ``"scan"`` (inputs are known for all steps: input-only
    subexpressions are hoisted out of the loop) or ``"step"``."""
    consts: dict[str, float] = {"dt": dt}
    for p in neuron.params:
        if p.name not in tensor_params:
            consts[p.name] = float(p.value)
    states = list(neuron.state_names)
    inputs = list(neuron.inputs)
    per_step_inputs = mode == "scan" and R == 0
    dyn = set(states) | (set() if per_step_inputs else set(inputs))
    step = set(inputs) if per_step_inputs else set()
    H = Hoister(dyn, step, set(tensor_params), prefix="%k")
    temps: list[Stmt] = []
    for t in neuron.temps:
        e = prepare(t.value, consts)
        if isinstance(e, ir.Num):
            consts[t.target] = e.value
            continue
        kind = H.kind(e)
        if kind in ("step", "static"):
            H.items.append((kind, t.target, e))
            H.add(t.target, kind)
            continue
        temps.append(Stmt(t.target, "=", H(e)))
        H.dyn.add(t.target)
    def prep(e: ir.Expr) -> ir.Expr:
        return H(prepare(e, consts))

    updates = {u.target: prep(u.value) for u in neuron.updates}
    spike = prep(neuron.spike_x) if neuron.spiking and neuron.spike_x is not None else None
    resets = [Stmt(a.target, a.op, prep(a.value)) for a in neuron.reset] if spike is not None \
        else []
    inits = {s.name: prepare(s.init, consts) for s in neuron.states}
    used: set[str] = set()
    for e in [s.value for s in temps] + list(updates.values()) + [s.value for s in resets] + (
            [spike] if spike is not None else []):
        used |= names(e)
    step_names = [n for n in inputs if n in used]
    step_names += [n for k, n, _ in H.items if k == "step" and n in used]
    static_names = [n for n in sorted(tensor_params) if n in used]
    static_names += [n for k, n, _ in H.items if k == "static" and n in used]
    # the hoisted tensors the loop reads and, transitively, those they read: a
    # hoisted temporary may feed only another hoisted subexpression (items only
    # read earlier items, so one backward pass closes the set)
    needed = set(used)
    for _k, hname, e in reversed(H.items):
        if hname in needed:
            needed |= names(e)
    hoisted = [item for item in H.items if item[1] in needed]
    held = {a.target for a in neuron.reset} if R > 0 else set()
    return NeuronPlan(neuron=neuron, R=R, states=states, inputs=inputs,
                      tensor_params=sorted(tensor_params), hoisted=hoisted, temps=temps,
                      updates=updates, spike=spike, resets=resets, inits=inits,
                      step_names=step_names, static_names=static_names, held=held)


def _size(e: ir.Expr, sizes: dict[str, int]) -> int:
    if isinstance(e, ir.Name):
        return sizes.get(e.id, 1)
    return 1 + sum(_size(a, sizes) for a in children(e))


MAX_ANALYTIC_SIZE = 400


def analytic_size(plan: NeuronPlan) -> int:
    """Size of the step with the temporaries written out (what SymPy would
    differentiate); above MAX_ANALYTIC_SIZE the layer keeps plain autograd."""
    sizes: dict[str, int] = {}
    for t in plan.temps:
        sizes[t.target] = _size(t.value, sizes)
    total = sum(_size(e, sizes) for e in plan.updates.values()) * max(1, len(plan.states))
    if plan.spike is not None:
        total += _size(plan.spike, sizes)
    total += sum(_size(r.value, sizes) for r in plan.resets)
    return total


def split_spike(x: ir.Expr) -> tuple[ir.Expr, ir.Expr]:
    if isinstance(x, ir.BinOp) and x.op == "-":
        return x.left, x.right
    return x, ir.Num(value=0.0)


def reset_order(resets: list[Stmt]) -> dict[int, bool]:
    """index -> whether it is the last reset statement of its state."""
    last = {}
    for i, s in enumerate(resets):
        last[s.target] = i
    return {i: last[s.target] == i for i, s in enumerate(resets)}


# ------------------------------------------------------------------ step code (autograd)


def step_code(plan: NeuronPlan, *, names_: dict[str, str], state_vars: dict[str, str],
              pre_vars: dict[str, str], z_var: str, ref_var: str | None, spike_fn: str,
              namer: Namer, ref_tensor: str, R: int) -> list[str]:
    """One step with autograd.  ``names_`` maps inputs (current step values),
    static tensors and hoisted names to code; ``state_vars`` are the locals
    holding the states (updated in place of the names); ``pre_vars`` receive
    the pre-reset values."""
    n = plan.neuron
    lines: list[str] = []
    env = dict(names_)
    env.update(state_vars)
    if R > 0:
        lines.append(f"{ref_var}_now = {ref_var} > 0")
        for i in plan.inputs:
            if i in env:
                masked = namer.fresh(f"{env[i]}_in")
                lines.append(f"{masked} = {env[i]}.masked_fill({ref_var}_now, 0.0)")
                env[i] = masked
    P = TorchPrinter(env, ref_tensor)
    for t in plan.temps:
        local = namer.fresh(t.target)
        lines.append(f"{local} = {P(t.value)}")
        env[t.target] = local
    new: dict[str, str] = {}
    for s in plan.states:
        if s in plan.updates:
            code = P(plan.updates[s])
            if s in plan.held:
                code = f"torch.where({ref_var}_now, {state_vars[s]}, {code})"
            lines.append(f"{pre_vars[s]} = {code}  # {statement_text(s, '=', n_update(n, s))}")
        else:
            lines.append(f"{pre_vars[s]} = {state_vars[s]}")
        new[s] = pre_vars[s]
    env.update(new)
    if plan.spike is not None:
        lhs, rhs = split_spike(plan.spike)
        x = ir.BinOp(op="-", left=lhs, right=rhs) if not (
            isinstance(rhs, ir.Num) and rhs.value == 0.0) else lhs
        lines.append(f"{z_var} = {spike_fn}.apply({P(fold(x))})  # spike {spk(lhs)} "
                     f"{n.spike_op} {spk(rhs)}")
        if R > 0:
            lines.append(f"{z_var} = {z_var}.masked_fill({ref_var}_now, 0.0)")
        zr = z_var
        if plan.resets and n.reset_detach:
            zr = namer.fresh(f"{z_var}_d")
            lines.append(f"{zr} = {z_var}.detach()")
        cur = dict(new)
        last = reset_order(plan.resets)
        for i, st in enumerate(plan.resets):
            env2 = dict(env)
            env2.update(cur)
            env2["%s"] = cur[st.target]
            env2["%z"] = zr
            P2 = TorchPrinter(env2, ref_tensor)
            S_, Z_ = ir.Name(id="%s"), ir.Name(id="%z")
            if st.op == "=":
                e = ir.BinOp(op="-", left=S_, right=ir.BinOp(op="*", left=Z_, right=ir.BinOp(
                    op="-", left=S_, right=st.value)))
            else:
                e = ir.BinOp(op="+" if st.op == "+=" else "-", left=S_,
                             right=ir.BinOp(op="*", left=Z_, right=st.value))
            code = P2(fold(e))
            target = state_vars[st.target] if last[i] else namer.fresh(f"{st.target}_r")
            lines.append(f"{target} = {code}  # reset {statement_text(st.target, st.op, st.value)}")
            cur[st.target] = target
        for s in plan.states:
            if cur[s] != state_vars[s]:
                lines.append(f"{state_vars[s]} = {cur[s]}")
        if R > 0:
            lines.append(f"{ref_var} = torch.where({z_var} > 0, {float(R)!r}, "
                         f"({ref_var} - 1.0).clamp(min=0.0))")
    else:
        for s in plan.states:
            lines.append(f"{state_vars[s]} = {new[s]}")
    return lines


def n_update(n: ir.LNeuron, s: str) -> ir.Expr:
    for u in n.updates:
        if u.target == s:
            return u.value
    return ir.Name(id=s)
