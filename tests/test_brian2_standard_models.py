"""The Brian2 target on the constructs of the standard models (jumps, the
refractory clamp with inputs kept, the refractory step of unclamped states,
ODEs mixed with updates, compound spike conditions, exponential Euler with
exprel, a unitless dt, networks without an input layer, Brian2-reserved
names): identical spikes and states within 1e-12 of the reference
interpreter (float64, runtime device), which is the definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("brian2")

from helpers.models import cuba_small

import spikedsl
from spikedsl.lowering import refractory
from spikedsl.runtime import reference
from spikedsl.targets import brian2 as b2t

ROOT = Path(__file__).parents[1]
NEST = ROOT / "specs" / "neurons" / "nest.spk"
HH = ROOT / "specs" / "neurons" / "hh_brian2.spk"
TOL = 1e-12  # volts, amperes, siemens and plain numbers alike: far below their scale


def _net(text: str, name: str, file: str = "case.spk"):
    return spikedsl.loads(text, file=str(ROOT / "tests" / file)).network(name).ir


def _keys(net) -> list[str]:
    keys = []
    for lay in net.layers:
        if lay.kind == "neuron":
            keys.append(lay.name)
            keys += [f"{lay.name}.{s}" for s in lay.states]
            keys += [f"{lay.name}.{s}_pre" for s in lay.states]
    return keys


def _compare(net, inputs, tol=TOL, skip_pre=False, device="runtime"):
    """Reference and Brian2 target on the same inputs: identical spikes, every
    state within ``tol``.  Returns the reference's outputs."""
    keys = _keys(net)
    ref = reference.run(net, inputs, record=keys)
    out = b2t.simulate(net, inputs, record=keys, device=device)
    for k in keys:
        a, b = np.asarray(ref[k]), np.asarray(out[k])
        assert a.shape == b.shape, k
        if "." not in k:
            np.testing.assert_array_equal(b, a, err_msg=k)
        elif not (skip_pre and k.endswith("_pre")):
            d = float(np.max(np.abs(a - b)))
            assert d <= tol, f"{k}: {d:g}"
    return ref, out


def _spikes(steps, n, where):
    x = np.zeros((steps, 1, n))
    for t, k in where:
        x[t, 0, k] = 1.0
    return x


# ---------------------------------------------------------------- NEST models
PSC_STEPS = 300
PSC_INPUT = [20, 40, 55, 58, 61, 66, 72, 78, 150]  # 58..72 arrive while refractory


def test_iaf_psc_exp_inputs_during_refractory():
    """The synaptic current keeps decaying and jumping while V_m is clamped
    (its ordinary step: it reads no held state): the second spike comes at
    step 90, as in NEST's closed form (tests/test_standard_models.py)."""
    net = _net(f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = {PSC_STEPS}
    input  s[1] : spikes
    layer  n[1] = iaf_psc_exp(I_e = 300 pA) <- one_to_one(s, weight = 1000 pA) -> S_ex
    output n
}}
""", "Net")
    assert not refractory.declared(net.layers[1].neuron).refr_updates  # the currents step as usual
    ref, out = _compare(net, _spikes(PSC_STEPS, 1, [(t, 0) for t in PSC_INPUT]))
    np.testing.assert_array_equal(np.nonzero(out["n"][:, 0, 0])[0], [56, 90, 193])
    # the current jumped in steps 58..72, during the refractory period 57..76
    i_syn = out["n.I_syn_ex"][:, 0, 0]
    assert i_syn[58] > i_syn[57] and i_syn[72] > i_syn[71]
    assert np.all(out["n.V_m"][57:77, 0, 0] == -70e-3)


def test_iaf_psc_delta_jump_into_the_clamped_state_is_lost():
    net = _net(f"""
import "{NEST}"
network Net {{
    dt    = 0.1 ms
    steps = 40
    input  s[1] : spikes
    layer  n[1] = iaf_psc_delta <- one_to_one(s, weight = 16 mV) -> S
    output n
}}
""", "Net")
    ref, out = _compare(net, _spikes(40, 1, [(3, 0), (10, 0), (22, 0), (30, 0)]))
    np.testing.assert_array_equal(np.nonzero(out["n"][:, 0, 0])[0], [3, 30])
    assert out["n.V_m"][10, 0, 0] == out["n.V_m"][22, 0, 0] == -70e-3


AEIF = f"""
import "{NEST}"
network Net {{
    dt    = 0.02 ms
    steps = 10000
    input  s[2] : spikes
    input  q[2] : spikes
    layer  n[2] = aeif_cond_exp(t_ref = 2 ms, I_e = 700 pA, V_peak = -40 mV) <- one_to_one(s, weight = 20 nS) -> S_ex + one_to_one(q, weight = 5 nS) -> S_in
    output n
}}
"""


def test_aeif_cond_exp_state_w_and_the_refractory_rk4_step():
    """AdEx: the state ``w`` is renamed (Brian2 refuses a neuron variable named
    as the synaptic weight); with t_ref = 2 ms [clamp V_m] the refractory step
    is RK4 of (w, g_ex, g_in) with V_m held."""
    net = _net(AEIF, "Net")
    assert "w_1 : amp" in b2t.convert(net)
    assert refractory.declared(net.layers[-1].neuron).refr_updates
    rng = np.random.default_rng(3)
    x = {"s": (rng.random((10000, 1, 2)) < 0.01).astype(float),
         "q": (rng.random((10000, 1, 2)) < 0.002).astype(float)}
    ref, out = _compare(net, x)
    assert out["n"].sum(0).min() >= 3


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
}
"""


def test_ode_then_update_with_a_guard_in_the_spike_condition():
    net = _net(MIXED, "Net")
    ref, out = _compare(net, np.full((30, 1, 1), 20.0))
    np.testing.assert_array_equal(np.nonzero(out["n"][:, 0, 0])[0], np.arange(0, 30, 3))


COMPOUND = """
neuron Compound {
    param tau = 5
    state v = 0
    state u = 0
    input I
    dv/dt = (I - v) / tau  method euler
    update u = 0.9 * u + 0.1 * v
    spike v >= 1 and u < 0.5 or v + I > 3.5
    reset v = 0; u += 0.2
    refractory 2
}
network Net {
    dt    = 1
    steps = 60
    input  x[4] : direct
    layer  n[4] = Compound <- one_to_one(x, weight = 1)
    output n
}
"""


def test_compound_spike_condition_with_and_or_and_an_input():
    """``and`` / ``or`` of comparisons, one of them reading the input (which
    then stays in its accumulator until after the reset)."""
    net = _net(COMPOUND, "Net")
    assert net.layers[1].neuron.spike_cond is not None
    x = np.random.default_rng(0).random((60, 1, 4)) * 2.5
    ref, out = _compare(net, x)
    z, v, u = out["n"][:, 0], out["n.v_pre"][:, 0], out["n.u_pre"][:, 0]
    by_and = (v >= 1) & (u < 0.5)
    by_or = v + x[:, 0] > 3.5
    assert (z * by_and * ~by_or).sum() > 0 and (z * by_or * ~by_and).sum() > 0
    assert ((v >= 1) & ~by_and & ~by_or).sum() > 0  # v above 1, held back by u
    assert z.sum() == 16


# ---------------------------------------------------------------- unitless dt
def test_unitless_dt_is_the_step_in_the_models_time_unit():
    """dt = 0.5: Euler with h = 0.5 and `refractory 2` = 4 steps."""
    net = _net("""
neuron Izh {
    param a = 0.02
    param b = 0.2
    param c = -65
    param d = 8
    state v = -65
    state u = -13
    input I
    dv/dt = 0.04 * v * v + 5 * v + 140 - u + I  method euler
    du/dt = a * (b * v - u)                     method euler
    spike v >= 30
    reset v = c; u += d
    refractory 2
}
network Net {
    dt    = 0.5
    steps = 400
    input  x[2] : direct
    layer  n[2] = Izh <- one_to_one(x, weight = 1)
    output n
}
""", "Net")
    lay = net.layers[1]
    assert lay.neuron.dt == 0.5 and lay.neuron.refractory_steps == 4
    assert "0.5" in b2t.convert(net)
    ref, out = _compare(net, np.broadcast_to(np.array([10.0, 14.0]), (400, 1, 2)).copy(),
                        tol=1e-9)  # mV as numbers in the tens: 1e-9 is 1e-12 relative
    assert out["n"].sum() >= 10


# ---------------------------------------------------------------- names
def test_brian2_reserved_names_state_w_param_xi_and_rule_states():
    """A neuron state ``w``, a parameter ``xi`` (Brian2's noise: ``xi``, ``xi_*``)
    and a neuron state named as a state of the synapse rule on its projection
    are renamed in the script, and the run equals the reference."""
    net = _net("""
synapse STDP {
    param a_plus = 0.01;  param a_minus = 0.012
    param tau_plus = 20 ms; param tau_minus = 20 ms; param w_max = 1.0
    state apre = 0; state apost = 0
    dapre/dt  = -apre / tau_plus
    dapost/dt = -apost / tau_minus
    on_pre  { apre += a_plus;   w = clip(w + apost, 0, w_max) }
    on_post { apost -= a_minus; w = clip(w + apre,  0, w_max) }
}
neuron Odd {
    param xi = 0.5
    param tau = 5 ms
    state v = 0
    state w = 0
    state apre = 0
    input I
    jump w += I
    dv/dt = (w - v) / tau
    dw/dt = -w * xi / tau
    update apre = apre + v
    spike v >= 1
    reset v = 0
    refractory 2 ms
}
network Names {
    dt = 1 ms
    steps = 40
    input x[6] : poisson(max_rate = 0.5)
    layer h[4] = Odd <- dense(x, bias = false)
    layer o[3] = Odd <- dense(h, bias = false)
    output o
    plasticity STDP on x -> h
    plasticity STDP on h -> o
}
""", "Names")
    src = b2t.convert(net)
    assert "u_xi : 1" in src and "w_1 : 1" in src and "apre_1 : 1" in src
    rng = np.random.default_rng(2)
    W = {"h.weight": rng.uniform(0, 1.5, (4, 6)), "o.weight": rng.uniform(0, 1.5, (3, 4))}
    x = (rng.random((40, 1, 6)) < 0.5).astype(float)
    keys = _keys(net) + ["h.weight", "o.weight"]
    ref = reference.run(net, x, weights=W, record=keys)
    out = b2t.simulate(net, x, weights=W, record=keys)
    for k in keys:
        assert float(np.max(np.abs(ref[k] - out[k]))) <= TOL, k
    assert out["h"].sum() > 0 and out["o"].sum() > 0


# ---------------------------------------------------------------- autonomous
AUTO = cuba_small()


def test_autonomous_cuba_equals_the_reference():
    net = _net(AUTO, "CUBA", "auto.spk")
    assert not net.inputs
    ref, out = _compare(net, {})
    assert out["exc"].shape == (2000, 1, 80)
    assert out["exc"].sum() == 214 and out["inh"].sum() == 46
    # the API without inputs, and the script run on its own
    api = spikedsl.loads(AUTO, file=str(ROOT / "tests" / "auto.spk")).network("CUBA")
    again = api.to_brian2()
    np.testing.assert_array_equal(again["exc"], out["exc"])
    ns = b2t.module(net)
    res = ns["run"]({}, None)
    np.testing.assert_array_equal(res["inh"], out["inh"])


def test_simulate_cli_runs_an_autonomous_network(tmp_path, capsys):
    from spikedsl.cli import main

    spec = tmp_path / "auto.spk"
    spec.write_text(AUTO)
    assert main(["simulate", str(spec), "-t", "brian2"]) == 0
    text = capsys.readouterr().out
    assert "no input layer" in text
    row = next(line for line in text.splitlines() if line.startswith("exc "))
    assert row.split()[2] == "214"


@pytest.mark.slow
def test_autonomous_cuba_on_cython():
    net = _net(AUTO, "CUBA", "auto.spk")
    _compare(net, {}, device="cython")


# ---------------------------------------------------------------- exponential Euler
def test_hh_exponential_euler_with_exprel():
    """Brian2's IF-curve HH neuron (exponential Euler, exprel) for 25 ms: the
    script calls Brian2's exprel."""
    net = _net(f"""
import "{HH}"
network IFCurve {{
    dt    = 0.01 ms
    steps = 2500
    input  x[4] : direct
    layer  n[4] = HHTraub <- one_to_one(x, weight = 1 nA)
    output n
}}
""", "IFCurve")
    assert "exprel(" in b2t.convert(net)
    x = np.broadcast_to(0.7 * np.arange(4, 8) / 8, (2500, 1, 4)).copy()
    ref, out = _compare(net, x)
    np.testing.assert_array_equal(out["n"].sum(0)[0], [2, 2, 2, 2])

