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
from spikedsl.lowering.neuron import steering_states
from spikedsl.targets.torch.expr import (
    Hoister,
    Namer,
    TorchPrinter,
    fold,
    number,
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
    states: list[str]
    inputs: list[str]
    tensor_params: list[str]  # names of tensor parameters (trainable / per-neuron)
    # (kind step|static, name, expr over inputs/params), in dependency order,
    # only those the step needs (directly or through another hoisted tensor)
    hoisted: list[tuple[str, str, ir.Expr]]
    temps: list[Stmt]  # per-step temporaries
    updates: dict[str, ir.Expr]
    spike: ir.Expr | None  # the surrogate argument of a single comparison
    resets: list[Stmt]
    inits: dict[str, ir.Expr]
    step_names: list[str]  # per-step tensors read by the loop (inputs / hoisted)
    static_names: list[str]  # static tensors read by the loop
    jumps: list[Stmt] = field(default_factory=list)  # in order, at the start of the step
    cond: ir.Expr | None = None  # a compound spike condition (and/or of leaves)
    # states that only steer the step (conditions): carried without gradient
    steering: frozenset[str] = frozenset()

    @property
    def spiking(self) -> bool:
        return self.spike is not None or self.cond is not None


# ------------------------------------------------------------------ compound spikes
def is_ordering(e: ir.Expr) -> bool:
    """A leaf ``x >= 0`` / ``x > 0`` of a compound condition (surrogate argument x);
    every other leaf is a guard (a 0/1 value without gradient)."""
    return isinstance(e, ir.Compare) and e.op in (">=", ">") and isinstance(
        e.right, ir.Num) and e.right.value == 0.0


def cond_leaves(cond: ir.Expr) -> list[ir.Expr]:
    """The leaves of a condition tree, left to right."""
    if isinstance(cond, ir.BoolOp):
        return cond_leaves(cond.left) + cond_leaves(cond.right)
    return [cond]


def combine(cond: ir.Expr, leaf, and_, or_):
    """Fold a condition tree: ``leaf(i, e)`` gives the value of the i-th leaf,
    ``and_(a, b)`` / ``or_(a, b)`` combine (H_a·H_b and H_a + H_b − H_a·H_b,
    the product rule of the surrogate gradient)."""
    count = [0]

    def go(e):
        if isinstance(e, ir.BoolOp):
            a, b = go(e.left), go(e.right)
            return and_(a, b) if e.op == "and" else or_(a, b)
        i = count[0]
        count[0] += 1
        return leaf(i, e)

    return go(cond)


def _prep_cond(e: ir.Expr, consts: dict[str, float], H: Hoister) -> ir.Expr:
    """Constants substituted and hoisting inside the leaves: the surrogate
    argument of an ordering leaf is hoisted, never the comparison (which would
    lose its gradient); a leaf that folds to a number becomes 0 or 1."""
    if isinstance(e, ir.BoolOp):
        return ir.BoolOp(op=e.op, left=_prep_cond(e.left, consts, H),
                         right=_prep_cond(e.right, consts, H))
    if is_ordering(e):
        x = prepare(e.left, consts)
        if isinstance(x, ir.Num):
            hit = x.value >= 0 if e.op == ">=" else x.value > 0
            return ir.Num(value=1.0 if hit else 0.0)
        return ir.Compare(op=e.op, left=H(x), right=ir.Num(value=0.0))
    return H(prepare(e, consts))


# ------------------------------------------------------------------ making a plan
def make_plan(neuron: ir.LNeuron, dt: float, tensor_params: set[str],
              mode: str) -> NeuronPlan:
    """``mode``: ``"scan"`` (inputs are known for all steps: input-only
    subexpressions are hoisted out of the loop) or ``"step"``."""
    consts: dict[str, float] = {"dt": dt}
    for p in neuron.params:
        if p.name not in tensor_params:
            consts[p.name] = float(p.value)
    states = list(neuron.state_names)
    inputs = list(neuron.inputs)
    per_step_inputs = mode == "scan"  # inputs are never masked: hoist them in a scan
    dyn = set(states) | (set() if per_step_inputs else set(inputs))
    step = set(inputs) if per_step_inputs else set()
    H = Hoister(dyn, step, set(tensor_params), prefix="%k")

    def prep(e: ir.Expr, c: dict[str, float] = consts) -> ir.Expr:
        return H(prepare(e, c))

    def lower_temps(src, c: dict[str, float]) -> list[Stmt]:
        out: list[Stmt] = []
        for t in src:
            e = prepare(t.value, c)
            if isinstance(e, ir.Num):
                c[t.target] = e.value
                continue
            kind = H.kind(e)
            if kind in ("step", "static"):
                H.items.append((kind, t.target, e))
                H.add(t.target, kind)
                continue
            out.append(Stmt(t.target, "=", H(e)))
            H.dyn.add(t.target)
        return out

    jumps = [Stmt(j.target, "=", prep(j.value)) for j in neuron.jumps]
    temps = lower_temps(neuron.temps, consts)
    updates = {u.target: prep(u.value) for u in neuron.updates}
    spike = prep(neuron.spike_x) if neuron.spiking and neuron.spike_x is not None else None
    cond = _prep_cond(neuron.spike_cond, consts, H) if neuron.spiking and \
        neuron.spike_cond is not None else None
    resets = [Stmt(a.target, a.op, prep(a.value)) for a in neuron.reset] if (
        spike is not None or cond is not None) else []
    inits = {s.name: prepare(s.init, consts) for s in neuron.states}
    used: set[str] = set()
    for e in ([s.value for s in jumps + temps + resets] + list(updates.values())
              + [x for x in (spike, cond) if x is not None]):
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
    return NeuronPlan(neuron=neuron, states=states, inputs=inputs,
                      tensor_params=sorted(tensor_params), hoisted=hoisted, temps=temps,
                      updates=updates, spike=spike, resets=resets, inits=inits,
                      step_names=step_names, static_names=static_names, jumps=jumps,
                      cond=cond, steering=steering_states(neuron))


def _size(e: ir.Expr, sizes: dict[str, int]) -> int:
    if isinstance(e, ir.Name):
        return sizes.get(e.id, 1)
    return 1 + sum(_size(a, sizes) for a in children(e))


MAX_ANALYTIC_SIZE = 400


def analytic_size(plan: NeuronPlan) -> int:
    """Size of the step with the temporaries written out (what SymPy would
    differentiate); above MAX_ANALYTIC_SIZE the layer keeps plain autograd."""
    sizes: dict[str, int] = {}
    for j in plan.jumps:  # a jumped state is the jump's value wherever the step reads it
        sizes[j.target] = sizes.get(j.target, 1) + _size(j.value, sizes)
    for t in plan.temps:
        sizes[t.target] = _size(t.value, sizes)
    steps = list(plan.updates.values())
    total = sum(_size(e, sizes) for e in steps) * max(1, len(plan.states))
    for x in (plan.spike, plan.cond):
        if x is not None:
            total += _size(x, sizes)
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


def reset_call(st: Stmt, s: str, z: str, P: TorchPrinter, out: str = "") -> str:
    """The reset statement ``st`` of the state whose value is the code ``s``,
    as one torch call computing exactly ``s - z*(s - e)``, ``s + z*e`` or
    ``s - z*e`` (``out``: ``", out=..."``)."""
    P.names["%s"] = s
    if st.op == "=":
        d = fold(ir.BinOp(op="-", left=ir.Name(id="%s"), right=st.value))
        return f"torch.addcmul({s}, {z}, {P.tensor(d)}, value=-1.0{out})"
    if isinstance(st.value, ir.Num):
        e = st.value.value if st.op == "+=" else -st.value.value
        return f"torch.add({s}, {z}, alpha={number(e)}{out})"
    sign = "" if st.op == "+=" else ", value=-1.0"
    return f"torch.addcmul({s}, {z}, {P.tensor(st.value)}{sign}{out})"


# ------------------------------------------------------------------ step code (autograd)


def full_like(code: str, e: ir.Expr, like: str, dyn: set[str]) -> str:
    """``code`` (the value of ``e``) with the shape of the state ``like`` when
    ``e`` reads nothing per neuron and step (a number or static tensors)."""
    if isinstance(e, ir.Num):
        return f"torch.full_like({like}, {number(e.value)})"
    if not names(e) & dyn:
        return f"({code}) + torch.zeros_like({like})"
    return code


def step_code(plan: NeuronPlan, *, names_: dict[str, str], state_vars: dict[str, str],
              pre_vars: dict[str, str], z_var: str, spike_fn, namer: Namer,
              ref_tensor: str) -> list[str]:
    """One neuron step with autograd (docs/semantics.md).  ``names_`` maps
    inputs (current step values), static tensors and hoisted names to code;
    ``state_vars`` are the locals holding the states (updated in place of the
    names); ``pre_vars`` receive the pre-reset values; ``spike_fn(op)`` names
    the surrogate spike function of a comparison ``x >= 0`` / ``x > 0``."""
    n = plan.neuron
    lines: list[str] = []
    env = dict(names_)
    env.update(state_vars)
    dyn = set(plan.states) | set(plan.inputs) | set(plan.step_names) | {
        t.target for t in plan.temps}
    P = TorchPrinter(env, ref_tensor)
    # jumps, in order, each reading what the previous ones left
    for j in plan.jumps:
        local = namer.fresh(f"{state_vars[j.target]}_j")
        code = full_like(P(j.value), j.value, env[j.target], dyn)
        lines.append(f"{local} = {code}  # jump {statement_text(j.target, '=', j.value)}")
        env[j.target] = local
    for t in plan.temps:
        local = namer.fresh(t.target)
        lines.append(f"{local} = {P(t.value)}")
        env[t.target] = local
    new: dict[str, str] = {}
    for s in plan.states:
        if s in plan.updates:
            code = full_like(P(plan.updates[s]), plan.updates[s], state_vars[s], dyn)
            lines.append(f"{pre_vars[s]} = {code}  # {statement_text(s, '=', n_update(n, s))}")
            if s in plan.steering and names(plan.updates[s]) - plan.steering:
                # it only steers the step: no gradient (from what it reads)
                lines.append(f"{pre_vars[s]} = {pre_vars[s]}.detach()")
        else:
            lines.append(f"{pre_vars[s]} = {env[s]}")
        new[s] = pre_vars[s]
    env.update(new)
    if plan.spiking:
        if plan.spike is not None:
            lhs, rhs = split_spike(plan.spike)
            x = ir.BinOp(op="-", left=lhs, right=rhs) if not (
                isinstance(rhs, ir.Num) and rhs.value == 0.0) else lhs
            lines.append(f"{z_var} = {spike_fn(n.spike_op)}.fire({P(fold(x))})  # spike "
                         f"{spk(lhs)} {n.spike_op} {spk(rhs)}")
        else:
            lines += cond_code(plan.cond, P, spike_fn, namer, z_var, new[plan.states[0]])
        zr = z_var
        if plan.resets and n.reset_detach:
            zr = namer.fresh(f"{z_var}_d")
            lines.append(f"{zr} = {z_var}.detach()")
        cur = dict(new)
        last = reset_order(plan.resets)
        for i, st in enumerate(plan.resets):
            env2 = dict(env)
            env2.update(cur)
            code = reset_call(st, cur[st.target], zr, TorchPrinter(env2, ref_tensor))
            target = state_vars[st.target] if last[i] else namer.fresh(f"{st.target}_r")
            lines.append(f"{target} = {code}  # reset {statement_text(st.target, st.op, st.value)}")
            cur[st.target] = target
        for s in plan.states:
            if cur[s] != state_vars[s]:
                lines.append(f"{state_vars[s]} = {cur[s]}")
            if s in plan.steering and any(r.target == s for r in plan.resets):
                lines.append(f"{state_vars[s]} = {state_vars[s]}.detach()")
    else:
        for s in plan.states:
            lines.append(f"{state_vars[s]} = {new[s]}")
    return lines



def cond_code(cond: ir.Expr, P: TorchPrinter, spike_fn, namer: Namer, z_var: str,
              like: str) -> list[str]:
    """``z = H(cond)`` of a compound condition with autograd: each ordering
    leaf through the surrogate spike function, guards as 0/1 constants,
    ``a and b`` = a·b, ``a or b`` = a + b − a·b (exact on 0/1 values)."""
    lines: list[str] = []
    guards: dict[str, tuple[str, str]] = {}  # a guard not yet computed: its bool code

    def local(code: str, hint: str) -> str:
        v = namer.fresh(hint)
        lines.append(f"{v} = {code}")
        return v

    def value(v: str) -> str:
        """A leaf or combination as a 0/1 tensor."""
        if v in guards:
            code, text = guards.pop(v)
            lines.append(f"{v} = {code}.to({P.dtype})  # guard {text}")
        return v

    def leaf(i: int, e: ir.Expr) -> str:
        if is_ordering(e):
            return local(f"{spike_fn(e.op)}.fire({P.tensor(e.left)})  # {spk(e)}",
                         f"{z_var}_{i}")
        if isinstance(e, ir.Num):
            return number(1.0 if e.value else 0.0)
        v = namer.fresh(f"{z_var}_{i}")
        guards[v] = (P.boolean(e), spk(e))
        return v

    def and_(a: str, b: str) -> str:
        if b in guards and a not in guards:  # H_a where the guard holds: one kernel
            code, text = guards.pop(b)
            return local(f"torch.where({code}, {a}, 0.0)  # and guard {text}", f"{z_var}_and")
        return local(f"{value(a)} * {value(b)}", f"{z_var}_and")

    z = combine(cond, leaf, and_,
                lambda a, b: local(f"{value(a)} + {value(b)} - {a} * {b}", f"{z_var}_or"))
    z = value(z)
    if z.replace(".", "", 1).isdigit():  # no leaf reads the step
        z = f"torch.full_like({like}, {z})"
    lines.append(f"{z_var} = {z}  # spike {spk(cond)}")
    return lines


def n_update(n: ir.LNeuron, s: str) -> ir.Expr:
    for u in n.updates:
        if u.target == s:
            return u.value
    return ir.Name(id=s)
