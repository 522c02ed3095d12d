"""Refractory periods: every decision about them, in this one module.

docs/semantics.md, a neuron with ``refractory T [clamp a, b]``:

* ``R = ceil(T / dt - 1e-9)`` steps (0 without a period), resolved when the
  neuron is placed in a network (:func:`steps`);
* the held states are the ``clamp`` list, by default the states the reset
  assigns (:func:`clamp_of`);
* the neuron is refractory in a step when its counter ``r`` is > 0 at the
  start of the step; then a jump of a held state is lost, a held state keeps
  its value, the other states take the step while refractory (their ODEs
  with the held states' derivatives 0, :func:`step_while_refractory`, where
  it differs from the ordinary step), and the spike is 0;
* after the spike the counter becomes ``R`` where the neuron fired, else
  ``max(r - 1, 0)``.

Lowering calls :func:`clamp_of`, :func:`step_while_refractory` and
:func:`steps`.  Every executor (the reference interpreter, the torch module and
its fused scan with the analytic backward, the Brian2 schedule) and every
matcher onto a built-in model (NIR, Norse, NEST) reads one :class:`Refractory`
through :func:`of` and builds its step with the combinators below, giving
only its own primitive ``hold(value while refractory, value otherwise)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from spikedsl import ir

V = TypeVar("V")
Hold = Callable[[V, V], V]  # hold(value while refractory, value otherwise)

__all__ = ["Refractory", "clamp_of", "counter_key", "of", "step_while_refractory", "steps"]


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


# ------------------------------------------------------------------ what executors read
@dataclass(frozen=True)
class Refractory:
    """The refractory period of a lowered neuron (``of(neuron)``)."""

    steps: int  # R; 0: none (or not placed in a network)
    duration: float  # in the neuron's time unit
    held: tuple[str, ...]  # states held while refractory (empty when steps == 0)
    temps: tuple[ir.Assign, ...]  # the step while refractory of the unclamped states
    updates: tuple[ir.Assign, ...]  # (empty where it is the ordinary step)

    def __bool__(self) -> bool:
        return self.steps > 0

    def jump(self, state: str, value: V, old: V, hold: Hold) -> V:
        """A jump's value: lost on a held state while refractory."""
        return hold(old, value) if state in self.held else value

    def kept(self, state: str, old: V, alt: Mapping[str, V]) -> V | None:
        """The value of ``state`` while refractory (``old`` for a held state,
        ``alt`` the step while refractory); None where it takes its update."""
        if state in self.held:
            return old
        return alt.get(state)

    def update(self, state: str, value: V, old: V, alt: Mapping[str, V], hold: Hold) -> V:
        """The new value of ``state`` from its update ``value``."""
        keep = self.kept(state, old, alt)
        return value if keep is None else hold(keep, value)

    def spike(self, z: V, mask: Callable[[V], V]) -> V:
        """The spike, 0 while refractory (``mask(z)``)."""
        return mask(z) if self.steps else z


def of(n: ir.LNeuron) -> Refractory:
    """The one accessor of a lowered neuron's refractory period."""
    R = int(n.refractory_steps or 0)
    return Refractory(steps=R, duration=float(n.refractory or 0.0),
                      held=tuple(n.clamp) if R else (),
                      temps=tuple(n.refr_temps) if R else (),
                      updates=tuple(n.refr_updates) if R else ())


def counter_key(layer: str) -> str:
    """The name of a layer's counter among the carried-over states."""
    return f"{layer}:refractory"
