"""Refractory periods: every decision about them, in this one module.

docs/semantics.md, a neuron with ``refractory T [clamp a, b]``:

* ``R = ceil(T / dt - 1e-9)`` steps (0 without a period), resolved when the
  neuron is placed in a network (:func:`steps`);
* the held states are the ``clamp`` list, by default the states the reset
  assigns (:func:`clamp_of`);
* a step is refractory when it starts within R steps after a spike; then a
  jump of a held state is lost, a held state keeps its value, the other
  states take the step while refractory (their ODEs with the held states'
  derivatives 0, :func:`step_while_refractory`, where it differs from the
  ordinary step), and the spike is 0.

Placing the neuron writes all of this as ordinary statements over a counter
state (:func:`expand`), so the executors (the reference interpreter, the
torch module with its fused scan and analytic backward, the Brian2 script)
run the period without knowing it.  The matchers onto built-in models that
hold a period themselves (NEST's ``t_ref``; NIR and Norse refuse or drop
it) read the neuron as declared (:func:`declared`, :func:`as_declared`,
:func:`of`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spikedsl import ir

__all__ = ["COUNTER", "Refractory", "as_declared", "clamp_of", "declared", "expand", "of",
           "step_while_refractory", "steps"]


# ------------------------------------------------------------------ lowering decisions
def steps(duration: float | None, dt: float) -> int:
    """R = ceil(refractory / dt - 1e-9), 0 without a refractory period."""
    return math.ceil(duration / dt - 1e-9) if duration and duration > 0 else 0


def clamp_of(n: ir.Neuron) -> tuple[str, ...]:
    """The states held while refractory: the ``clamp`` list, else the reset targets."""
    if n.clamp is not None:
        return tuple(c.id for c in n.clamp)
    return tuple(dict.fromkeys(a.target for a in n.reset))


def step_while_refractory(n: ir.Neuron, clamp: tuple[str, ...], order: list[str],
                          rhs: list[ir.Expr], updates: list[ir.Assign], solve, same
                          ) -> tuple[list[ir.Assign], list[ir.Assign]]:
    """The temporaries and updates of the unclamped states while refractory:
    the system stepped by ``solve(rhs)`` (the method's step, returning
    temporaries and updates) with the held states' derivatives 0, exactly
    where the method is exact.  Empty where it is the ordinary step (``same``
    compares two lists of updates)."""
    if n.refractory is None or not n.odes or not set(clamp) & set(order):
        return [], []
    # a state whose dynamics reads no held state (through the others) steps as usual
    free = _independent_of(set(clamp), order, rhs)
    if not set(order) - set(clamp) - free:
        return [], []
    held = [ir.Num(value=0.0, text="0") if s in clamp else r for s, r in zip(order, rhs)]
    rt, ru = solve(held)
    ru = [u for u in ru if u.target not in clamp and u.target not in free]
    normal = [u for u in updates if u.target in set(order) - set(clamp) - free]
    return ([], []) if not ru or same(ru, normal) else (rt, ru)


def _independent_of(held: set[str], order: list[str], rhs: list[ir.Expr]) -> set[str]:
    """The states whose derivatives read none of ``held``, directly or
    through other states."""
    from spikedsl.ir.exprs import names

    reads = {s: names(r) & set(order) for s, r in zip(order, rhs)}
    tainted = set(held)
    grew = True
    while grew:
        grew = False
        for s, r in reads.items():
            if s not in tainted and r & tainted:
                tainted.add(s)
                grew = True
    return set(order) - tainted


# ------------------------------------------------------------------ what matchers read
@dataclass(frozen=True)
class Refractory:
    """The declared refractory period of a lowered neuron (``of(neuron)``)."""

    steps: int  # R; 0: none (or not placed in a network)
    duration: float  # in the neuron's time unit
    held: tuple[str, ...]  # states held while refractory (empty when steps == 0)

    def __bool__(self) -> bool:
        return self.steps > 0


def of(n: ir.LNeuron) -> Refractory:
    """The declared period of a lowered neuron."""
    R = int(n.refractory_steps or 0)
    return Refractory(steps=R, duration=float(n.refractory or 0.0),
                      held=tuple(n.clamp) if R else ())


# ------------------------------------------------------------------ the period as statements
COUNTER = "refractory"  # the counter state: a keyword, so no name of the user's


def expand(n: ir.LNeuron) -> ir.LNeuron:
    """The neuron with its refractory period written as ordinary statements.

    A counter state ``refractory`` (0 when free, ``R + 1`` after a spike): a
    step is refractory when the counter is > 1 at its start; the updates take
    ``max(refractory - 1, 0)``, the reset ``refractory = R + 1``.  A held
    state keeps its value (``where(refractory > 1, s, update)``; a jump of it
    is lost), an unclamped state whose step differs while refractory takes
    that step, and the spike condition gains the guard ``refractory == 0``
    (true after the update exactly when the step was not refractory; a
    guard, so no gradient flows through it).  The declared neuron stays in
    ``declared`` for the matchers onto built-in models and the capability
    checks."""
    R = int(n.refractory_steps or 0)
    if R <= 0 or n.declared is not None:
        return n
    from spikedsl.ir.exprs import names, substitute
    from spikedsl.ir.functions import num
    from spikedsl.lowering.neuron import fresh_name

    q = ir.Name(id=COUNTER)
    busy = ir.Compare(op=">", left=q, right=num(1.0))

    def hold(kept: ir.Expr, value: ir.Expr) -> ir.Expr:
        return ir.Call(func="where", args=(busy, kept, value))

    held = set(n.clamp)
    # the step while refractory has temporaries of its own: fresh names
    taken = set(n.state_names) | {p.name for p in n.params} | set(n.inputs) | {
        t.target for t in n.temps} | {COUNTER, "dt"}
    for a in n.temps + n.refr_temps + n.updates:
        taken |= names(a.value)
    rename: dict[str, ir.Expr] = {}
    temps = list(n.temps)
    for t in n.refr_temps:
        new = fresh_name(t.target + "_refr", taken)
        temps.append(ir.Assign(target=new, value=substitute(t.value, rename)))
        rename[t.target] = ir.Name(id=new)
    alt = {u.target: substitute(u.value, rename) for u in n.refr_updates}
    updates = []
    for u in n.updates:
        kept = ir.Name(id=u.target) if u.target in held else alt.get(u.target)
        updates.append(u if kept is None else u.model_copy(update={"value": hold(kept, u.value)}))
    updates.append(ir.Assign(target=COUNTER, value=ir.Call(
        func="max", args=(ir.BinOp(op="-", left=q, right=num(1.0)), num(0.0)))))
    jumps = tuple(j.model_copy(update={"value": hold(ir.Name(id=j.target), j.value)})
                  if j.target in held else j for j in n.jumps)
    free = ir.Compare(op="==", left=q, right=num(0.0))
    spike_cond = n.spike_cond
    if n.spiking:
        if spike_cond is None and n.spike_x is not None:
            spike_cond = ir.Compare(op=n.spike_op, left=n.spike_x, right=num(0.0))
        if spike_cond is not None:
            spike_cond = ir.BoolOp(op="and", left=spike_cond, right=free)
    reset = n.reset + (ir.Assign(target=COUNTER, value=num(float(R + 1))),)
    states = n.states + (ir.LState(name=COUNTER, init=num(0.0)),)
    return n.model_copy(update={
        "states": states, "temps": tuple(temps), "updates": tuple(updates), "jumps": jumps,
        "spike_x": None if spike_cond is not None else n.spike_x, "spike_cond": spike_cond,
        "reset": reset, "refr_temps": (), "refr_updates": (), "declared": n})


def declared(n: ir.LNeuron) -> ir.LNeuron:
    """The neuron as declared (before :func:`expand`)."""
    return n.declared if n.declared is not None else n


def as_declared(net: ir.LNetwork) -> ir.LNetwork:
    """The network with every neuron as declared: what the matchers onto
    built-in models (NIR, NEST) read, whose models hold the period themselves."""
    if not any(la.neuron is not None and la.neuron.declared is not None for la in net.layers):
        return net
    layers = tuple(la.model_copy(update={"neuron": la.neuron.declared, "states": tuple(
        la.neuron.declared.state_names)}) if la.neuron is not None and la.neuron.declared
        is not None else la for la in net.layers)
    return net.model_copy(update={"layers": layers})
