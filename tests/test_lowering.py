"""Lowering against analytic solutions: exact (<=1e-12), Euler (order 1),
RK2 (order 2), RK4 (order 4, shown by halving dt)."""

from __future__ import annotations

import math

import pytest

import spikedsl
from spikedsl import ir
from spikedsl.ir.exprs import evaluate

LINEAR = """
neuron L {{
    param tau = 10.0
    param a = 2.0
    state v = 1.0
    input I
    dv/dt = (a * I - v) / tau {method}
}}
"""

COUPLED = """
neuron C {{
    param tau_syn = 5.0
    param tau_mem = 10.0
    state syn = 1.0
    state v = 0.0
    input I
    dsyn/dt = -syn / tau_syn + I
    dv/dt = (syn - v) / tau_mem {method}
}}
"""


def step(neuron: ir.LNeuron, state: dict[str, float], env: dict[str, float]) -> dict[str, float]:
    scope = dict(env)
    scope.update(state)
    for t in neuron.temps:
        scope[t.target] = evaluate(t.value, scope)
    return {u.target: evaluate(u.value, scope) for u in neuron.updates}


def simulate(neuron, t_end, dt, I):
    env = {p.name: p.value for p in neuron.params}
    env.update(dt=dt, I=I)
    state = {s.name: evaluate(s.init, env) for s in neuron.states}
    for _ in range(round(t_end / dt)):
        state = step(neuron, state, env)
    return state


def linear_exact(t, I, tau=10.0, a=2.0, v0=1.0):
    return a * I + (v0 - a * I) * math.exp(-t / tau)


def coupled_exact(t, I, ts=5.0, tm=10.0, s0=1.0):
    # syn(t) = I*ts + (s0 - I*ts) e^{-t/ts};  v solves dv/dt = (syn - v)/tm, v(0) = 0
    A = s0 - I * ts
    c = I * ts
    k = A / tm / (1 / tm - 1 / ts)
    return c * (1 - math.exp(-t / tm)) + k * (math.exp(-t / ts) - math.exp(-t / tm))


def load_neuron(src, name, method):
    return spikedsl.loads(src.format(method=method)).neuron(name)


@pytest.mark.parametrize("dt", [0.1, 1.0, 7.3])
def test_exact_linear_is_exact(dt):
    n = load_neuron(LINEAR, "L", "method exact")
    assert n.method == "exact"
    got = simulate(n, 20 * dt, dt, I=1.5)["v"]
    assert abs(got - linear_exact(20 * dt, 1.5)) <= 1e-12


@pytest.mark.parametrize("dt", [0.1, 2.0])
def test_exact_coupled_system_is_exact(dt):
    n = load_neuron(COUPLED, "C", "method exact")
    got = simulate(n, 30 * dt, dt, I=0.7)["v"]
    assert abs(got - coupled_exact(30 * dt, 0.7)) <= 1e-12


def test_default_method_is_exact_for_linear_and_euler_otherwise():
    assert load_neuron(LINEAR, "L", "").method == "exact"
    quad = spikedsl.loads("neuron Q {\n state v = 0\n input I\n dv/dt = v * v + I\n}")
    assert quad.neuron("Q").method == "euler"


@pytest.mark.parametrize("method,order", [("euler", 1), ("rk2", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    n = load_neuron(COUPLED, "C", f"method {method}")
    errs = []
    for dt in (0.4, 0.2, 0.1):
        got = simulate(n, 8.0, dt, I=0.7)["v"]
        errs.append(abs(got - coupled_exact(8.0, 0.7)))
    for coarse, fine in zip(errs, errs[1:]):
        ratio = coarse / fine
        assert 2 ** order * 0.8 < ratio < 2 ** order * 1.25, (errs, ratio)


def test_update_neuron_reads_old_values():
    p = spikedsl.loads("""
neuron D {
    state a = 1
    state b = 2
    input I
    update a = b; b = a
}
""")
    n = p.neuron("D")
    assert step(n, {"a": 1.0, "b": 2.0}, {"I": 0.0, "dt": 1.0}) == {"a": 2.0, "b": 1.0}


def test_spike_condition_normalised():
    p = spikedsl.loads("""
neuron S {
    param th = 1
    state v = 0
    input I
    update v = v + I
    spike th < v
}
""")
    n = p.neuron("S")
    assert n.spike_op == ">"
    assert evaluate(n.spike_x, {"v": 3.0, "th": 1.0}) == 2.0


def test_overrides_and_surrogate_defaults():
    p = spikedsl.loads(LINEAR.format(method="") .replace("    dv/dt", "    spike v > 1\n    dv/dt"))
    n = p.neuron("L", tau=20.0)
    assert n.param("tau").value == 20.0
    assert n.surrogate.name == "fast_sigmoid" and n.surrogate.args == {"slope": 25.0}


def test_units_are_si_and_dims_recorded():
    p = spikedsl.loads("""
neuron U {
    param tau = 10 ms
    param v_rest = -65 mV
    state v = -65 mV
    input I : nA
    param r = 10 Mohm
    dv/dt = (v_rest - v + r * I) / tau
}
""")
    n = p.neuron("U")
    assert n.uses_units
    assert n.param("tau").value == pytest.approx(0.01)
    assert n.param("tau").dim == "s"
    assert n.param("v_rest").dim == "V"
    assert n.input_dims == ("A",)
