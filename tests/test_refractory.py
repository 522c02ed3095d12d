"""spikedsl.lowering.refractory: the one module of refractory periods."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import spikedsl
from spikedsl.lowering import refractory
from spikedsl.runtime import reference
from spikedsl.targets.torch.expr import spk

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
    n = _placed()
    rf = refractory.of(n)
    assert rf.steps == 3 and rf.duration == 2.5
    assert rf.held == ("v",)
    assert bool(rf)
    # g reads v: while v is held, g takes a step of its own (v's derivative 0)
    d = refractory.declared(n)
    assert [u.target for u in d.refr_updates] == ["g"]
    assert d.refr_updates[0].value != {u.target: u.value for u in d.updates}["g"]


def test_clamp_list_overrides_the_reset_targets():
    n = _placed(" [clamp v, g]")
    assert refractory.of(n).held == ("v", "g")
    assert refractory.declared(n).refr_updates == ()  # every state of the system is held


def test_an_unplaced_neuron_has_no_steps_and_holds_nothing():
    n = spikedsl.loads(SPEC % "").neuron("Exp")
    rf = refractory.of(n)
    assert rf.steps == 0 and rf.held == () and not rf
    assert refractory.expand(n) is n


def test_placing_writes_the_period_as_statements():
    n = _placed()
    d = refractory.declared(n)
    assert n.state_names == ["v", "g", "refractory"] and d.state_names == ["v", "g"]
    ups = {u.target: spk(u.value) for u in n.updates}
    assert ups["refractory"] == "max(refractory - 1, 0)"
    assert ups["v"].startswith("where(refractory > 1, v, ")
    # g takes the step while refractory, with its own temporaries
    assert ups["g"].startswith("where(refractory > 1, ")
    assert spk(n.reset[-1].value) == "4" and n.reset[-1].target == "refractory"
    assert spk(n.spike_cond) == "v - 1 > 0 and refractory == 0"
    assert n.spike_x is None and d.spike_x is not None
    assert not n.refr_updates and n.refractory_steps == 3  # the period stays declared
    assert refractory.as_declared(spikedsl.loads(SPEC % "").network("N").ir).layer(
        "h").neuron == d


def test_the_counter_and_the_held_state_on_the_reference():
    """A neuron that would fire every step: it fires, then rests R = 3 steps
    with v held at its reset value, the jump of v lost; the counter counts
    R + 1, R, ..., 1 after each spike and is 0 in a free step."""
    net = spikedsl.loads("""
neuron Busy {
    state v = 0
    input I
    update v = v + 0.5
    jump v = v + I
    spike v > 0.9
    reset v = 0
    refractory 3
}
network N {
    dt = 1
    steps = 12
    input x[1] : direct
    layer h[1] = Busy <- one_to_one(x, weight = 1)
    output h
}
""").network("N").ir
    x = np.zeros((12, 1, 1))
    x[3, 0, 0] = 5.0  # lost: step 3 is refractory
    out = reference.run(net, {"x": x}, record=["h.v", "h.refractory"])
    z = out["h"][:, 0, 0]
    assert np.nonzero(z)[0].tolist() == [1, 6, 11]
    assert out["h.refractory"][:, 0, 0].tolist() == [0, 4, 3, 2, 1, 0, 4, 3, 2, 1, 0, 4]
    assert out["h.v"][:, 0, 0].tolist() == [0.5, 0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0.5, 0]


EXECUTORS = ["runtime/interpreter.py", "runtime/arrays.py", "targets/torch",
             "targets/brian2/code.py", "targets/brian2/plan.py", "targets/brian2/__init__.py"]


def test_no_executor_knows_about_refractory_periods():
    """The reference interpreter, the torch module (with its fused scan and
    analytic backward) and the Brian2 script run the statements lowering
    wrote: none of them reads the period, the held states or a counter."""
    pat = re.compile(r"refractor|refr_|clamp_of|\.held\b|counter", re.I)
    files = [f for e in EXECUTORS for f in ([PKG / e] if e.endswith(".py") else
                                            sorted((PKG / e).glob("*.py")))]
    assert len(files) > 10
    offenders = [str(p.relative_to(PKG)) for p in files if pat.search(p.read_text())]
    assert offenders == []


# ------------------------------------------------------------------ gradients
STEER = """
neuron Steer {
    state v = 0
    state c = 0
    state w = 0
    state a = 0
    input I
    update v = where(c > 0, v, 0.5 * v + I - a)
    update c = max(c - 1, 0) + w
    update w = 0.9 * w + v
    update a = 0.9 * a
    spike v > 1 and c == 0
    reset v = 0; c = 3; a += 0.1
}
"""


def test_steering_states_are_the_states_read_only_in_conditions():
    from spikedsl.lowering.neuron import steering_states

    n = spikedsl.loads(STEER).neuron("Steer")
    # c is read in a where condition and a guard (and by itself); a is read
    # by v's update, v by the spike; w is read by c's update only, but in no
    # condition: it keeps its gradient (which is 0 here, as nothing reads c's)
    assert steering_states(n) == {"c"}
    assert steering_states(_placed()) == {"refractory"}
    plain = spikedsl.loads(SPEC.replace("    refractory 2.5%s\n", "")).network("N").ir
    assert steering_states(plain.layer("h").neuron) == frozenset()


def test_both_torch_paths_give_the_same_gradients_with_a_refractory_period():
    """The fused scan (analytic backward, the counter left out of the
    adjoint) and the step path (autograd, the counter detached) agree."""
    torch = pytest.importorskip("torch")
    from spikedsl.targets.torch import build

    net = spikedsl.loads(SPEC % "").network("N").ir
    grads = []
    for fast in (True, False):
        m = build(net, dtype=torch.float64, fast=fast)
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(0.6)
        x = torch.linspace(0.2, 2.0, 16, dtype=torch.float64).reshape(8, 2, 1)
        x.requires_grad_(True)
        out = m(x)
        z = out["h"]
        assert 2 <= z.sum() < 16  # it spikes, and rests after a spike
        (z * torch.arange(1.0, 9.0, dtype=torch.float64)[:, None, None]).sum().backward()
        grads.append([x.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
