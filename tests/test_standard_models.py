"""NEST's and Brian2's standard models written the natural way (jumps,
refractory clamp, ODEs mixed with update, compound spike conditions,
exponential_euler), checked against closed forms computed here, independently
of spikedsl's lowering, on every target that runs them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import spikedsl
from spikedsl.runtime import reference

ROOT = Path(__file__).parents[1]
NEST = ROOT / "specs" / "neurons" / "nest.spk"

# ---------------------------------------------------------------- iaf_psc_exp
# NEST defaults (nest.spk), I_e = 300 pA, dt = 0.1 ms, input spikes of 1000 pA
E_L, C_M, TAU_M, TAU_S, T_REF, V_TH, V_RESET, I_E = (
    -70e-3, 250e-12, 10e-3, 2e-3, 2e-3, -55e-3, -70e-3, 300e-12)
DT, STEPS, W = 1e-4, 300, 1000e-12
# the first spike is in step 56; the spikes of steps 58 to 72 arrive while the
# neuron is refractory (steps 57..76): V_m is clamped, I_syn_ex keeps decaying
# and still jumps, which brings the second spike forward to step 90
INPUT_STEPS = [20, 40, 55, 58, 61, 66, 72, 78, 150]


def psc_exp_closed_form():
    """V_m and spikes of iaf_psc_exp by NEST's exact propagation, written out:
    with I(t) = I0 e^{-t/τs} over a step of length h,
    V(h) = E_L + (V0 - E_L) e^{-h/τm} + I_e τm/C (1 - e^{-h/τm})
           + I0/C · τm τs/(τm - τs) · (e^{-h/τm} - e^{-h/τs})."""
    R = math.ceil(T_REF / DT - 1e-9)
    em, es = math.exp(-DT / TAU_M), math.exp(-DT / TAU_S)
    v, i_syn, r = E_L, 0.0, 0
    vs, spikes = [], []
    for n in range(STEPS):
        if n in INPUT_STEPS:
            i_syn += W  # the jump, with this step's input
        if r == 0:
            v = (E_L + (v - E_L) * em + I_E * TAU_M / C_M * (1 - em)
                 + i_syn / C_M * TAU_M * TAU_S / (TAU_M - TAU_S) * (em - es))
        i_syn *= es
        z = r == 0 and v >= V_TH
        if z:
            v, r = V_RESET, R
        elif r > 0:
            r -= 1
        vs.append(v)
        spikes.append(z)
    return np.array(vs), np.array(spikes, dtype=float)


PSC_NET = f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = {STEPS}
    input  s[1] : spikes
    layer  n[1] = iaf_psc_exp(I_e = 300 pA) <- one_to_one(s, weight = 1000 pA) -> S_ex
    output n
    output n.V_m
}}
"""


def _psc_input():
    x = np.zeros((STEPS, 1, 1))
    x[INPUT_STEPS, 0, 0] = 1.0
    return x


def test_closed_form_has_spikes_and_inputs_during_refractory():
    v, z = psc_exp_closed_form()
    first = int(np.argmax(z))
    assert z.sum() >= 2
    R = round(T_REF / DT)
    assert any(first < k <= first + R for k in INPUT_STEPS)


@pytest.mark.parametrize("xp", ["numpy", "torch"])
def test_iaf_psc_exp_matches_the_closed_form_on_the_reference(xp):
    import importlib

    net = spikedsl.loads(PSC_NET, file=str(ROOT / "psc.spk")).network("Net").ir
    out = reference.run(net, _psc_input(), xp=importlib.import_module(xp))
    v, z = psc_exp_closed_form()
    np.testing.assert_array_equal(out["n"][:, 0, 0], z)
    assert np.max(np.abs(out["n.V_m"][:, 0, 0] - v)) < 1e-12  # volts: 1e-9 mV


def test_refractory_keeps_the_synaptic_current_receiving_spikes():
    """Dropping the inputs that arrive while refractory (the old semantics)
    loses the second spike: the closed form needs them."""
    v, z = psc_exp_closed_form()
    global INPUT_STEPS
    saved = INPUT_STEPS
    first = int(np.argmax(z))
    try:
        INPUT_STEPS = [k for k in saved if not first < k <= first + 20]
        _, z_lost = psc_exp_closed_form()
    finally:
        INPUT_STEPS = saved
    np.testing.assert_array_equal(np.nonzero(z)[0], [56, 90, 193])
    np.testing.assert_array_equal(np.nonzero(z_lost)[0], [56, 154])


# ---------------------------------------------------------------- iaf_psc_delta
def test_iaf_psc_delta_jump_moves_v_and_is_lost_while_refractory():
    text = f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = 40
    input  s[1] : spikes
    layer  n[1] = iaf_psc_delta <- one_to_one(s, weight = 16 mV) -> S
    output n
    output n.V_m
}}
"""
    net = spikedsl.loads(text, file=str(ROOT / "delta.spk")).network("Net").ir
    x = np.zeros((40, 1, 1))
    x[[3, 10, 22, 30], 0, 0] = 1.0
    out = reference.run(net, x)
    v = out["n.V_m"][:, 0, 0]
    em = math.exp(-1e-4 / 10e-3)
    # step 3: V jumps from -70 to -54 mV >= -55 mV: a spike, reset to -70 mV
    assert out["n"][3, 0, 0] == 1 and abs(v[3] - (-70e-3)) < 1e-15
    # step 10 (refractory for steps 4..23): the jump is lost, V stays at -70 mV
    assert out["n"][10, 0, 0] == 0 and abs(v[10] - (-70e-3)) < 1e-15
    # step 22 still refractory (R = 20: steps 4..23): lost as well
    assert out["n"][22, 0, 0] == 0 and abs(v[22] - (-70e-3)) < 1e-15
    # step 30: jump of 16 mV, then decay over one step toward E_L
    assert out["n"][30, 0, 0] == 1
    assert abs(out["n.V_m"][29, 0, 0] - (-70e-3)) < 1e-15
    np.testing.assert_array_equal(np.nonzero(out["n"][:, 0, 0])[0], [3, 30])
    assert em < 1


# ---------------------------------------------------------------- mixed, compound
MIXED = """
neuron Counted {
    param tau  = 10
    param v_th = 1.0
    state v  = 0
    state rc = 0
    input I
    dv/dt = (I - v) / tau  method euler
    update rc = max(rc - 1, 0)
    spike v >= v_th and rc == 0
    reset rc = 3
}
network Net {
    dt    = 1
    steps = 30
    input  x[1] : direct
    layer  n[1] = Counted <- one_to_one(x, weight = 1)
    output n
    output n.v
    output n.rc
}
"""


def test_ode_then_update_and_a_guarded_spike_condition():
    net = spikedsl.loads(MIXED, file="mixed.spk").network("Net").ir
    out = reference.run(net, np.full((30, 1, 1), 20.0))
    v, rc, z = out["n.v"][:, 0, 0], out["n.rc"][:, 0, 0], out["n"][:, 0, 0]
    # independent loop: Euler v, then the counter, spike on both
    ev, erc = 0.0, 0.0
    for n in range(30):
        ev = ev + (20.0 - ev) / 10
        erc = max(erc - 1, 0)
        ez = ev >= 1.0 and erc == 0
        if ez:
            erc = 3
        assert z[n] == float(ez) and v[n] == pytest.approx(ev, abs=1e-12)
        assert rc[n] == erc
    # v is not reset (no reset of v): the counter alone spaces the spikes
    np.testing.assert_array_equal(np.nonzero(z)[0], [0, 3, 6, 9, 12, 15, 18, 21, 24, 27])


# ---------------------------------------------------------------- exponential_euler
def test_exponential_euler_is_exact_for_a_linear_equation():
    def net(method):
        text = f"""
neuron N {{
    param tau = 7 ms
    state v = 0
    input I
    dv/dt = (I - v) / tau  method {method}
    spike v >= 0.9
    reset v = 0
}}
network Net {{
    dt    = 0.5 ms
    steps = 80
    input  x[2] : direct
    layer  n[2] = N <- one_to_one(x, weight = 1)
    output n.v
}}
"""
        return spikedsl.loads(text, file=f"{method}.spk").network("Net").ir

    x = np.broadcast_to(np.array([1.5, 0.7]), (80, 1, 2)).copy()
    a = reference.run(net("exponential_euler"), x)["n.v"]
    b = reference.run(net("exact"), x)["n.v"]
    assert np.max(np.abs(a - b)) < 1e-14


def test_exponential_euler_steps_each_gate_exactly_with_v_held():
    """m' = m∞ + (m - m∞) e^{-h/τ} with α, β at the old v (Brian2's scheme)."""
    text = """
neuron Gate {
    state v = -60 mV
    state m = 0.1
    input I : mV
    dv/dt = (I - v) / (5 ms)  method exponential_euler
    dm/dt = (0.5 * (1 - m) - exp(v / (20 mV)) * m) / ms  method exponential_euler
    spike v >= 100 mV
}
network Net {
    dt    = 0.1 ms
    steps = 20
    input  x[1] : direct
    layer  n[1] = Gate <- one_to_one(x, weight = 1 mV)
    output n.m
    output n.v
}
"""
    net = spikedsl.loads(text, file="gate.spk").network("Net").ir
    out = reference.run(net, np.full((20, 1, 1), -20.0))
    v, m = -60e-3, 0.1
    h = 1e-4
    for n in range(20):
        a, b = 0.5 / 1e-3, math.exp(v / 20e-3) / 1e-3
        tau, minf = 1 / (a + b), a / (a + b)
        m_new = minf + (m - minf) * math.exp(-h / tau)
        v = -20e-3 + (v - -20e-3) * math.exp(-h / 5e-3)
        m = m_new
        assert out["n.m"][n, 0, 0] == pytest.approx(m, rel=1e-12)
        assert out["n.v"][n, 0, 0] == pytest.approx(v, rel=1e-12)
