""".spk -> NIR (HDF5) -> .spk round trips: the imported network gives the
original outputs (float64, <= 1e-9) for LIF, CubaLIF, IF, LI (and I, CubaLI)
neurons, dense and conv, feed-forward and recurrent."""

from __future__ import annotations

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from helpers.nir import random_inputs, random_weights, reference, simulate

import spikedsl
from spikedsl.targets import nir as nir_target
from spikedsl.targets.nir import importer as nir_import

NEURONS = {
    # LIF, exact step, units, leak, r != 1, fires on >=
    "lif_exact": """
neuron N {
    param tau_mem = 10 ms
    param v_th = 1.0
    param v_reset = 0.1
    param v_leak = 0.2
    param r = 2.0
    state v = 0.0
    input I
    dv/dt = (v_leak - v + r * I) / tau_mem   method exact
    spike v >= v_th
    reset v = v_reset
}""",
    "lif_euler": """
neuron N {
    param tau_mem = 5 ms
    param v_th = 0.8
    state v = 0.3
    input I
    dv/dt = (-v + I) / tau_mem   method euler
    spike v > v_th
    reset v = 0
}""",
    # snnTorch's Leaky: a discrete update
    "leaky_update": """
neuron N {
    param beta = 0.85
    state v = 0
    input I
    update v = beta * v + I
    spike v > 1
    reset v = 0
}""",
    "cubalif_exact": """
neuron N {
    param tau_syn = 5 ms
    param tau_mem = 10 ms
    param r = 1.5
    state syn = 0
    state v = 0
    input I
    dsyn/dt = (-syn + I) / tau_syn
    dv/dt = (-v + r * syn) / tau_mem
    spike v >= 0.5
    reset v = 0
}""",
    "cubalif_euler": """
neuron N {
    param tau_syn = 4 ms
    param tau_mem = 8 ms
    state syn = 0
    state v = 0
    input I
    dsyn/dt = (-syn + 2 * I) / tau_syn   method euler
    dv/dt = (0.1 - v + syn) / tau_mem   method euler
    spike v > 0.5
    reset v = -0.1
}""",
    # snnTorch's Synaptic: the membrane reads the new current
    "synaptic_update": """
neuron N {
    param alpha = 0.8
    param beta = 0.7
    state syn = 0
    state v = 0
    input I
    update syn = alpha * syn + I
    update v = beta * v + alpha * syn + I
    spike v > 1
    reset v = 0
}""",
    # a jump of the current (NEST's iaf_psc_exp without refractory period):
    # CubaLIF with Dirac input, exact
    "cubalif_jump_exact": """
neuron N {
    param tau_syn = 2 ms
    param tau_mem = 10 ms
    param r = 1.5
    param w = 0.8
    state syn = 0.1
    state v = 0
    input S
    jump syn += w * S
    dsyn/dt = -syn / tau_syn                    method exact
    dv/dt = (0.2 - v + r * syn) / tau_mem   method exact
    spike v >= 0.5
    reset v = 0
}""",
    # Norse's LIFCell: the current jumps, then one Euler step
    "cubalif_jump_euler": """
neuron N {
    param tau_syn = 4 ms
    param tau_mem = 8 ms
    state syn = 0
    state v = 0
    input S
    jump syn += S
    dsyn/dt = -syn / tau_syn        method euler
    dv/dt = (-v + syn) / tau_mem   method euler
    spike v > 0.5
    reset v = 0
}""",
    "cubalif_jump_expeuler": """
neuron N {
    param tau_syn = 3 ms
    param tau_mem = 8 ms
    state syn = 0
    state v = 0
    input S
    jump syn += 2 * S
    dsyn/dt = -syn / tau_syn        method exponential_euler
    dv/dt = (-v + syn) / tau_mem   method exponential_euler
    spike v > 0.5
    reset v = 0
}""",
    "cubalif_expeuler": """
neuron N {
    param tau_syn = 3 ms
    param tau_mem = 8 ms
    state syn = 0
    state v = 0
    input I
    dsyn/dt = (I - syn) / tau_syn        method exponential_euler
    dv/dt = (0.1 - v + 2 * syn) / tau_mem   method exponential_euler
    spike v > 0.5
    reset v = 0
}""",
    "lif_expeuler": """
neuron N {
    param tau_mem = 10 ms
    state v = 0
    input I
    dv/dt = (0.1 - v + I) / tau_mem   method exponential_euler
    spike v > 0.5
    reset v = 0
}""",
    "if": """
neuron N {
    state v = 0
    input I
    update v = v + 0.5 * I
    spike v >= 1
    reset v = 0
}""",
    "if_units": """
neuron N {
    param r = 2000 Hz
    state v = 0
    input I
    dv/dt = r * I
    spike v > 1
    reset v = 0
}""",
    # non-spiking readouts: the membrane is the output
    "li": """
neuron N {
    param tau = 20 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method exact
}""",
    "integrator": """
neuron N {
    state v = 0
    input I
    update v = v + 0.25 * I
}""",
    "cubali": """
neuron N {
    param tau_syn = 5 ms
    param tau_mem = 20 ms
    state syn = 0
    state v = 0
    input I
    dsyn/dt = (-syn + I) / tau_syn
    dv/dt = (-v + syn) / tau_mem
}""",
}
SPIKING = {k for k in NEURONS if k not in ("li", "integrator", "cubali")}
UNITS = {"lif_exact", "lif_euler", "cubalif_exact", "cubalif_euler", "if_units", "li", "cubali",
         "cubalif_jump_exact", "cubalif_jump_euler", "cubalif_jump_expeuler", "cubalif_expeuler",
         "lif_expeuler"}


def dense_net(kind: str) -> str:
    out = "o" if kind in SPIKING else "o.v"
    dt = "dt = 1 ms" if kind in UNITS else "dt = 1"
    return NEURONS[kind] + f"""
network Net {{
    {dt}
    steps = 25
    input x[6] : spikes
    layer h[7] = N <- dense(x)
    layer o[4] = N <- dense(h{'' if kind in SPIKING else '.v'}, bias = false)
    output {out}
}}
"""


def conv_net(kind: str) -> str:
    out = "o" if kind in SPIKING else "o.v"
    src = "" if kind in SPIKING else ".v"
    dt = "dt = 1 ms" if kind in UNITS else "dt = 1"
    return NEURONS[kind] + f"""
network Net {{
    {dt}
    steps = 12
    input x[2, 8, 8] : spikes
    layer c = N <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer p = avgpool2d(c{src}, 2)
    layer s = sumpool2d(p, 2)
    layer f = flatten(s)
    layer o[5] = N <- dense(f)
    output {out}
}}
"""


def recurrent_net(kind: str) -> str:
    dt = "dt = 1 ms" if kind in UNITS else "dt = 1"
    return NEURONS[kind] + f"""
network Net {{
    {dt}
    steps = 30
    input x[5] : spikes
    layer h[6] = N <- dense(x) + dense(h, bias = false)
    layer o[3] = N <- dense(h) + dense(o)
    output o
    output h
}}
"""


def roundtrip(text: str, tmp_path, scale=3.0, weights_extra=None, **export_kw):
    net = spikedsl.loads(text).network("Net").ir
    # neurons with jumps run on the reference interpreter (the definition of the step)
    sim = reference if any(lay.neuron.jumps for lay in net.layers if lay.neuron) else simulate
    x = random_inputs(net, net.steps, B=3, p=0.35, seed=1)
    for s in (scale, 3 * scale, 10 * scale, 30 * scale):  # weights strong enough to fire
        W = random_weights(net, scale=s, extra=weights_extra)
        o1 = sim(net, x, W)
        if all(o1[o.name].sum() > 0 for o in net.outputs if o.state is None):
            break
    path = tmp_path / "net.nir"
    nir_target.write(net, str(path), weights=W, **export_kw)
    g = nir.read(str(path))  # NIR's own reader and type check accept the file
    assert isinstance(g, nir.NIRGraph)
    spk = tmp_path / "model.spk"
    res = nir_import.write_import(str(path), str(spk))
    net2 = spikedsl.load(str(spk)).network("Imported").ir
    x2 = {net2.inputs[0].name: x[net.inputs[0].name]} if len(x) == 1 else x
    o2 = sim(net2, x2, None)  # the imported spec names its own weights file
    return net, net2, o1, o2, res


def _compare(net, o1, o2, res, need_spikes=True):
    nout = {o.name for o in net.outputs}
    names2 = set(res.outputs.values())
    for name in nout:
        assert name in names2, (name, names2)
        a, b = o1[name], o2[name]
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)
        if need_spikes and "." not in name:
            assert a.sum() > 0, f"no spikes in {name}: the test would prove nothing"


@pytest.mark.parametrize("kind", sorted(NEURONS))
def test_dense_roundtrip(kind, tmp_path):
    net, _net2, o1, o2, res = roundtrip(dense_net(kind), tmp_path)
    _compare(net, o1, o2, res)


@pytest.mark.parametrize("kind", ["lif_exact", "leaky_update", "cubalif_exact", "synaptic_update",
                                  "if", "li"])
def test_conv_roundtrip(kind, tmp_path):
    net, _net2, o1, o2, res = roundtrip(conv_net(kind), tmp_path, scale=4.0)
    _compare(net, o1, o2, res)


@pytest.mark.parametrize("kind", ["lif_exact", "leaky_update", "cubalif_euler", "if"])
def test_recurrent_roundtrip(kind, tmp_path):
    net, _net2, o1, o2, res = roundtrip(recurrent_net(kind), tmp_path)
    _compare(net, o1, o2, res)
    g = nir.read(str(tmp_path / "net.nir"))
    assert ("w_h_h", "h") in g.edges and ("h", "w_h_h") in g.edges  # a graph cycle


def test_per_neuron_parameters_roundtrip(tmp_path):
    text = """
neuron N {
    param tau_mem = 10 ms [per_neuron]
    param v_th = 1.0 [per_neuron]
    state v = 0
    input I
    dv/dt = (-v + I) / tau_mem   method exact
    spike v >= v_th
    reset v = 0
}
network Net {
    dt = 0.5 ms
    steps = 30
    input x[6] : spikes
    layer h[7] = N <- dense(x)
    output h
}
"""
    rng = np.random.default_rng(3)
    extra = {"h.tau_mem": rng.uniform(2e-3, 20e-3, 7), "h.v_th": rng.uniform(0.5, 1.5, 7)}
    net, _net2, o1, o2, res = roundtrip(text, tmp_path, weights_extra=extra)
    _compare(net, o1, o2, res)
    g = nir.read(str(tmp_path / "net.nir"))
    np.testing.assert_allclose(g.nodes["h"].tau, extra["h.tau_mem"], rtol=1e-12)
    # the thresholds come back exactly, with the comparison >=
    assert "spike v >= v_threshold" in res.text
    np.testing.assert_array_equal(res.weights["h.v_threshold"], extra["h.v_th"])


def test_initial_state_and_leak_roundtrip(tmp_path):
    text = NEURONS["lif_exact"].replace("state v = 0.0", "state v = v_leak + 0.5") + """
network Net {
    dt = 1 ms
    steps = 20
    input x[3] : spikes
    layer h[4] = N(v_leak = 0.3) <- dense(x)
    output h
}
"""
    net, _net2, o1, o2, res = roundtrip(text, tmp_path)
    _compare(net, o1, o2, res)
    assert "state v = v_init" in res.text


def test_torch_target_agrees_with_reference():
    """The reference interpreter used by these tests agrees with the torch target."""
    for kind in ("lif_exact", "synaptic_update", "li"):
        net = spikedsl.loads(dense_net(kind)).network("Net").ir
        W = random_weights(net)
        x = random_inputs(net, net.steps)
        a, b = simulate(net, x, W), reference(net, x, W)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-9)


def test_export_mapping_table():
    """Each neuron maps to the NIR model and parameters of docs/nir.md."""
    expect = {"lif_exact": "LIF", "lif_euler": "LIF", "leaky_update": "LIF",
              "cubalif_exact": "CubaLIF", "cubalif_euler": "CubaLIF",
              "synaptic_update": "CubaLIF", "if": "IF", "if_units": "IF", "li": "LI",
              "integrator": "I", "cubali": "CubaLI", "cubalif_jump_exact": "CubaLIF",
              "cubalif_jump_euler": "CubaLIF", "cubalif_jump_expeuler": "CubaLIF",
              "cubalif_expeuler": "CubaLIF", "lif_expeuler": "LIF"}
    for kind, typ in expect.items():
        net = spikedsl.loads(dense_net(kind)).network("Net").ir
        g, _ = nir_target.export(net, weights=random_weights(net))
        assert type(g.nodes["h"]).__name__ == typ, kind
    net = spikedsl.loads(dense_net("lif_exact")).network("Net").ir
    h = nir_target.export(net, weights=random_weights(net))[0].nodes["h"]
    np.testing.assert_allclose(h.tau, 0.01)
    np.testing.assert_allclose(h.r, 2.0)
    np.testing.assert_allclose(h.v_leak, 0.2)
    np.testing.assert_allclose(h.v_reset, 0.1)
    assert np.all(h.v_threshold == np.nextafter(1.0, 0))  # >= as > on the float below
    # snnTorch's convention for a discrete leaky update: tau = dt/(1-beta), r = tau/dt
    net = spikedsl.loads(dense_net("leaky_update")).network("Net").ir
    g, notes = nir_target.export(net, weights=random_weights(net))
    h = g.nodes["h"]
    np.testing.assert_allclose(h.tau, 1e-4 / 0.15)
    np.testing.assert_allclose(h.r, 1 / 0.15)
    np.testing.assert_allclose(h.v_leak, 0.0)
    assert any("no time unit" in n for n in notes)
    assert g.metadata["dt"] == 1e-4
    # Synaptic: tau_syn = dt/(1-alpha), w_in = tau_syn/dt, r = tau_mem/dt
    net = spikedsl.loads(dense_net("synaptic_update")).network("Net").ir
    h = nir_target.export(net, weights=random_weights(net))[0].nodes["h"]
    np.testing.assert_allclose(h.tau_syn, 1e-4 / 0.2)
    np.testing.assert_allclose(h.w_in, 1 / 0.2)
    np.testing.assert_allclose(h.tau_mem, 1e-4 / 0.3)
    np.testing.assert_allclose(h.r, 1 / 0.3)
    assert h.metadata["discretization"] == "semi_implicit"
    # a jump of the current: CubaLIF with Dirac input, w_in = k tau_syn / dt (the
    # jump k = 0.8 per unit of input), the membrane's own r
    net = spikedsl.loads(dense_net("cubalif_jump_exact")).network("Net").ir
    h = nir_target.export(net, weights=random_weights(net))[0].nodes["h"]
    assert h.metadata["discretization"] == "exact" and h.metadata["input"] == "dirac"
    np.testing.assert_allclose(h.w_in, 0.8 * 2e-3 / 1e-3)
    np.testing.assert_allclose(h.r, 1.5)
    np.testing.assert_allclose(h.tau_syn, 2e-3)
    np.testing.assert_allclose(h.v_leak, 0.2)
    # exponential Euler: one-state LIF is exact; CubaLIF keeps its time constants
    net = spikedsl.loads(dense_net("lif_expeuler")).network("Net").ir
    h = nir_target.export(net, weights=random_weights(net))[0].nodes["h"]
    assert h.metadata["discretization"] == "exact"
    np.testing.assert_allclose(h.tau, 10e-3)
    net = spikedsl.loads(dense_net("cubalif_expeuler")).network("Net").ir
    h = nir_target.export(net, weights=random_weights(net))[0].nodes["h"]
    assert h.metadata["discretization"] == "exponential_euler" and "input" not in h.metadata
    np.testing.assert_allclose([h.tau_syn[0], h.tau_mem[0], h.r[0], h.w_in[0], h.v_leak[0]],
                               [3e-3, 8e-3, 2.0, 1.0, 0.1])
