"""NIR and Norse on the standard models (NEST's iaf_psc_exp, the Hodgkin-Huxley
neurons): a jump into a current-based synapse is NIR's CubaLIF with Dirac input
and round-trips exactly; what NIR or Norse cannot express (nonlinear steps,
compound spike conditions, refractory clamps) is refused fast, with the reason."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from helpers.nir import random_inputs, reference

import spikedsl
from spikedsl.targets import nir as nir_target
from spikedsl.targets.nir import importer as nir_import

ROOT = Path(__file__).parents[1]
NEURONS = ROOT / "specs" / "neurons"


def _net(spec: str, layer: str, dt: str = "0.1 ms", steps: int = 300,
         extra: str = "") -> spikedsl.ir.LNetwork:
    text = f"""
import "{NEURONS / spec}"
{extra}
network Net {{
    dt    = {dt}
    steps = {steps}
    input x[5] : spikes
    layer h[4] = {layer}
    output h
}}
"""
    return spikedsl.loads(text).network("Net").ir


def _refusal(fn, net) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(spikedsl.Unsupported) as e:
        fn(net)
    return e.value.render(), time.perf_counter() - t0


def _targets():
    out = [("NIR", lambda net: nir_target.export(net, weights={}))]
    try:
        import norse.torch  # noqa: F401

        from spikedsl.targets import norse as norse_target

        out.append(("Norse", lambda net: norse_target.convert(net)))
    except ImportError:  # pragma: no cover
        pass
    return out


# ---------------------------------------------------------------- fast refusals
@pytest.mark.parametrize("spec, layer, words", [
    ("hodgkin_huxley.spk", "HodgkinHuxley <- dense(x)", ["its rk4 step is not linear", "'m**3'"]),
    ("hh_brian2.spk", "HHTraub <- dense(x)",
     ["its exponential_euler step is not linear", "the step of 'v'"]),
    ("izhikevich.spk", "IzhikevichRS <- dense(x)", ["not linear", "v**2"]),
    ("nest.spk", "aeif_cond_exp <- dense(x) -> I", ["not linear", "min(V_m, V_peak)"]),
    ("nest.spk", "iaf_cond_exp <- dense(x) -> I", ["not linear", "g_ex"]),
])
def test_nonlinear_neurons_are_refused_fast_on_both_targets(spec, layer, words):
    """The affine test runs on the lowered statements before any SymPy work: the
    Hodgkin-Huxley refusal took minutes when the composed RK4 step was expanded."""
    net = _net(spec, layer, dt="0.01 ms", steps=10)
    for target, fn in _targets():
        msg, secs = _refusal(fn, net)
        assert f"{target} cannot express neuron" in msg, msg
        # the registry's declared capabilities (state count, refractory period) may
        # refuse first; otherwise the nonlinear term is named
        declared = ("states; Norse's cells have one or two", "it has a refractory period")
        if not any(d in msg for d in declared):
            for w in words:
                assert w in msg, msg
        assert secs < 1.0, (target, spec, secs)


def test_compound_spike_condition_is_refused_on_both_targets():
    extra = """
neuron G {
    param tau = 10 ms
    state v = 0
    state syn = 0
    input I
    dsyn/dt = (I - syn) / (2 ms)
    dv/dt = (syn - v) / tau
    spike v >= 1 and syn > 0.5
    reset v = 0
    surrogate fast_sigmoid(slope = 1)
}"""
    net = _net("lif.spk", "G <- dense(x)", extra=extra, dt="1 ms", steps=5)
    for target, fn in _targets():
        msg, secs = _refusal(fn, net)
        assert "joins comparisons with and/or" in msg, msg
        assert f"{target} neurons fire on one threshold" in msg, msg
        assert secs < 1.0


def test_refractory_clamp_is_refused_with_the_clamped_states():
    net = _net("nest.spk", "iaf_psc_exp <- dense(x) -> S_ex")
    msg, secs = _refusal(lambda n: nir_target.export(n, weights={}), net)
    assert "holding 'V_m' for 20 steps after a spike); NIR neurons have none" in msg, msg
    assert secs < 1.0
    # allow_approx drops the refractory period (and says so)
    _g, notes = nir_target.export(net, allow_approx=True)
    assert any("refractory period dropped" in n for n in notes)


# ---------------------------------------------------------------- CubaLIF with Dirac input
def test_nest_iaf_psc_exp_is_cubalif_with_dirac_input_and_round_trips(tmp_path):
    """NEST's iaf_psc_exp without refractory period and with excitatory spikes only:
    V_m' and I_syn' are the exact propagators after the jump I_syn += S.  That is
    NIR's CubaLIF (tau_syn dI/dt = -I + w_in x, tau_mem dv/dt = v_leak - v + r I)
    driven by a Dirac impulse of area x*dt per step (the current jumps by
    w_in x dt / tau_syn = x): w_in = tau_syn/dt, r = tau_m/C_m, v_leak = E_L + r I_e."""
    net = _net("nest.spk", "iaf_psc_exp(t_ref = 0 ms, I_e = 300 pA) <- sparse(x, p = 0.6, "
               "weight = 400 pA, seed = 1) -> S_ex")
    g, notes = nir_target.export(net)
    h = g.nodes["h"]
    assert type(h).__name__ == "CubaLIF"
    assert h.metadata["discretization"] == "exact" and h.metadata["input"] == "dirac"
    assert any("'I_syn_in' stays 0" in n for n in notes)
    np.testing.assert_allclose(h.tau_syn, 2e-3, rtol=1e-12)
    np.testing.assert_allclose(h.tau_mem, 10e-3, rtol=1e-12)
    np.testing.assert_allclose(h.w_in, 2e-3 / 1e-4, rtol=1e-12)
    np.testing.assert_allclose(h.r, 10e-3 / 250e-12, rtol=1e-12)
    np.testing.assert_allclose(h.v_leak, -70e-3 + 10e-3 / 250e-12 * 300e-12, rtol=1e-12)
    np.testing.assert_allclose(h.v_reset, -70e-3)
    np.testing.assert_allclose(h.metadata["v_threshold"], -55e-3, rtol=1e-12)
    assert np.all(h.v_threshold == np.nextafter(h.metadata["v_threshold"], -np.inf))
    # export -> HDF5 -> import-nir -> run: the reference's spikes and V_m
    path = tmp_path / "psc.nir"
    nir_target.write(net, str(path))
    res = nir_import.write_import(str(path), str(tmp_path / "psc.spk"))
    assert "jump syn += w_in * dt / tau_syn * I" in res.text
    assert "method exact" in res.text
    net2 = spikedsl.load(str(tmp_path / "psc.spk")).network("Imported").ir
    x = random_inputs(net, net.steps, B=2, p=0.3, seed=1)
    a = reference(net, x, None, record=["h.V_m", "h.I_syn_ex"])
    b = reference(net2, {net2.inputs[0].name: x["x"]}, None, record=["h.v", "h.syn"])
    assert a["h"].sum() > 20
    np.testing.assert_array_equal(b["h"], a["h"])
    np.testing.assert_allclose(b["h.v"], a["h.V_m"], rtol=0, atol=1e-12)  # volts
    np.testing.assert_allclose(b["h.syn"], a["h.I_syn_ex"], rtol=0, atol=1e-18)  # amperes


@pytest.mark.parametrize("method, disc", [("exact", "exact"), ("euler", "euler"),
                                          ("exponential_euler", "exponential_euler")])
def test_jump_weight_scaling_follows_the_step(method, disc):
    """w_in = k tau_syn / dt for a jump of k per unit of input, whatever the method
    (snnTorch's Synaptic export uses the same scaling, w_in = tau_syn/dt for k = 1);
    r is the membrane's own r."""
    extra = f"""
neuron J {{
    param tau_syn = 2 ms
    param tau_mem = 8 ms
    param r = 3.0
    param k = 0.25
    state syn = 0
    state v = 0
    input S
    jump syn += k * S
    dsyn/dt = -syn / tau_syn                  method {method}
    dv/dt = (0.1 - v + r * syn) / tau_mem   method {method}
    spike v > 1
    reset v = 0
}}"""
    net = _net("lif.spk", "J <- dense(x)", extra=extra, dt="0.5 ms", steps=5)
    g, _ = nir_target.export(net, weights={"h.weight": np.ones((4, 5)), "h.bias": np.zeros(4)})
    h = g.nodes["h"]
    assert h.metadata["discretization"] == disc and h.metadata["input"] == "dirac"
    np.testing.assert_allclose(h.w_in, 0.25 * 2e-3 / 0.5e-3, rtol=1e-12)
    np.testing.assert_allclose(h.r, 3.0, rtol=1e-12)
    np.testing.assert_allclose(h.v_leak, 0.1, rtol=1e-12)
    np.testing.assert_allclose(h.tau_syn, 2e-3, rtol=1e-12)
    np.testing.assert_allclose(h.tau_mem, 8e-3, rtol=1e-12)
