"""spikedsl.lowering.refractory: the one module of refractory periods."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import spikedsl
from spikedsl.lowering import refractory

PKG = pathlib.Path(spikedsl.__file__).parent

SPEC = """
neuron Exp {
    param tau = 10
    state v = 0
    state g = 0
    input I
    dv/dt = (-v + g) / tau
    dg/dt = -g / 5 + I + v / 20
    spike v > 1
    reset v = 0
    refractory 2.5%s
}

network N {
    dt = 1
    steps = 8
    input x[1] : direct
    layer h[1] = Exp <- dense(x) -> I
    output h
}
"""


def _placed(clamp: str = ""):
    return spikedsl.loads(SPEC % clamp).network("N").ir.layer("h").neuron


@pytest.mark.parametrize(("duration", "dt", "R"), [
    (2e-3, 1e-3, 2), (3e-3, 1e-3, 3), (2.5e-3, 1e-3, 3), (1e-3, 1e-3, 1),
    (0.0, 1e-3, 0), (None, 1e-3, 0), (2.0, 1.0, 2), (2.0, 0.5, 4)])
def test_steps_is_ceil_of_duration_over_dt(duration, dt, R):
    assert refractory.steps(duration, dt) == R


def test_of_a_placed_neuron_holds_the_reset_targets_by_default():
    rf = refractory.of(_placed())
    assert rf.steps == 3 and rf.duration == 2.5
    assert rf.held == ("v",)
    # g reads v: while v is held, g takes a step of its own (v's derivative 0)
    assert [u.target for u in rf.updates] == ["g"]
    normal = {u.target: u.value for u in _placed().updates}
    assert rf.updates[0].value != normal["g"]
    assert bool(rf)


def test_clamp_list_overrides_the_reset_targets():
    rf = refractory.of(_placed(" [clamp v, g]"))
    assert rf.held == ("v", "g")
    assert rf.updates == ()  # every state of the system is held


def test_an_unplaced_neuron_has_no_steps_and_holds_nothing():
    n = spikedsl.loads(SPEC % "").neuron("Exp")
    rf = refractory.of(n)
    assert rf.steps == 0 and rf.held == () and not rf


def test_combinators_on_arrays():
    rf = refractory.of(_placed())
    refr = np.array([True, False])

    def hold(kept, v):
        return np.where(refr, kept, v)

    old, new = np.array([1.0, 2.0]), np.array([5.0, 6.0])
    assert rf.jump("v", new, old, hold).tolist() == [1.0, 6.0]
    assert rf.jump("g", new, old, hold).tolist() == [5.0, 6.0]
    alt = {"g": np.array([7.0, 8.0])}
    assert rf.update("v", new, old, alt, hold).tolist() == [1.0, 6.0]
    assert rf.update("g", new, old, alt, hold).tolist() == [7.0, 6.0]
    assert rf.update("g", new, old, {}, hold).tolist() == [5.0, 6.0]
    z = np.array([True, True])
    assert rf.spike(z, lambda f: f & ~refr).tolist() == [False, True]
    assert refractory.counter_key("h") == "h:refractory"


def test_no_module_but_the_refractory_one_computes_R_or_reads_the_lowered_fields():
    """Every reader goes through refractory.of(): the step count, the held
    states and the step while refractory are read in one module."""
    pat = re.compile(r"ceil\([^)]*refractory|\b(?:n|nrn|neu|neuron)\.(?:refr_temps|refr_updates)\b")
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if p.name != "refractory.py" and pat.search(p.read_text())]
    assert offenders == []
