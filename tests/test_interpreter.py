"""The reference interpreter's step loop (spikedsl/runtime/interpreter.py) on
numpy and on torch: the same numbers (float64, <= 1e-12, identical spikes) on
a network that uses every construct of the language, plasticity included."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import spikedsl
from spikedsl.runtime import reference

SPEC = """
neuron LIF {
    param tau_mem = 10 ms   [per_neuron(uniform(5 ms, 15 ms))]
    param v_th    = 1.0
    param t_ref   = 2 ms
    state v = 0.0
    input I
    dv/dt = (-v + I) / tau_mem   method exact
    spike v >= v_th
    reset v = 0
    refractory t_ref
}
neuron ALIF {
    param tau_mem   = 20 ms
    param tau_adapt = 100 ms
    param beta      = 1.8
    state v = 0.0
    state a = 0.0
    input I_exc
    input I_inh
    dv/dt = (-v + I_exc - I_inh) / tau_mem   method rk4
    da/dt = -a / tau_adapt                    method rk4
    spike v >= 1 + beta * a
    reset v -= 1 + beta * a; a += 0.05
}
neuron Izh {
    state v = -0.2
    state u = 0.0
    input I
    dv/dt = 0.5 * v * v + 0.3 * v - u + I   method rk2
    du/dt = 0.02 * (0.2 * v - u)            method rk2
    spike v > 1
    reset v = -0.5; u += 0.1
}
neuron Quad {
    param k = 0.04
    state v = 0
    state u = 0.0
    input I
    update v = v + k * v * v + 0.3 * v - u + I; u = u + 0.02 * (0.2 * v - u)
    spike v >= 1
    reset detach v = -0.5; u += 0.1
    refractory 2
}
neuron Funcs {
    state v = 0
    state w = 0.1
    input I
    update v = 0.8 * v + sigmoid(I) - 0.4 + clip(I, -0.2, 0.2)
               + where(v > 0.5 and not (I < 0), 0.1, -0.05)
               + 0.01 * (tanh(I) + relu(I) + sin(I) + cos(v) + abs(v) - sqrt(abs(I) + 1)
                         + log(1 + abs(v)) + exp(-abs(I)) + min(v, 1) + max(I, 0)
                         + (v >= 0.2 or I != 0) + (v <= 2) + (v == 0))
    update w = w ** 1.01
    spike v > 1
    reset v = v - 1
}
neuron LI {
    param tau = 20 ms
    state v = 0
    input I
    dv/dt = (-v + I) / tau   method euler
}
synapse STDP {
    param a_plus = 0.01;  param a_minus = 0.012
    param tau_plus = 20 ms; param tau_minus = 20 ms; param w_max = 1.0
    state apre = 0; state apost = 0
    dapre/dt  = -apre / tau_plus
    dapost/dt = -apost / tau_minus
    on_pre  { apre += a_plus;   w = clip(w + apost, 0, w_max) }
    on_post { apost -= a_minus; w = clip(w + apre,  0, w_max) }
}
synapse Triplet {
    param a = 0.05
    param tau = 10.0
    state x = 0
    dx/dt = -x / tau   method euler
    on_pre  { x += 1; w += a * x * (1 - w) }
    on_post { w -= 0.5 * a * x * w }
}
network All {
    dt = 1 ms
    steps = 30
    input x[2, 6, 6] : poisson(max_rate = 0.6, seed = 3)
    input u[4] : direct
    input l[5] : latency(tau = 5, threshold = 0.01)
    input s[8] : spikes
    layer c = LIF <- conv2d(x, channels = 3, kernel = 3, padding = 1)
    layer pa = avgpool2d(c, 2)
    layer pm = maxpool2d(c, 2)
    layer ps = sumpool2d(c, kernel = 2, stride = 1)
    layer bn = batchnorm(pa)
    layer dr = dropout(bn, p = 0.5)
    layer f = flatten(dr)
    layer fm = flatten(pm)
    layer y[6] = tanh(dense(fm))
    layer cl = sconv_lstm(c, channels = 2, kernel = 3, threshold = 0.05)
    layer sl = slstm(u, hidden = 4, threshold = 0.05)
    layer a[10] = ALIF <- dense(f) -> I_exc + dense(f, sign = inhibitory) -> I_inh + dense(sl) -> I_exc
    layer q[10] = Quad <- dense(a, delay = 2) + one_to_one(a, weight = 0.5) + dense(y)
    layer z[8] = Izh <- dense(s, bias = false) + sparse(z, p = 0.3, weight = 0.4, seed = 5) + dense(l)
    layer g[8] = Funcs <- one_to_one(z, weight = 0.6) + dense(q, sign = excitatory) + dense(g, bias = false, delay = 1)
    layer fc = flatten(cl)
    layer o[8] = LIF <- dense(s, bias = false) + dense(fc)
    layer r[3] = LI <- dense(g) + dense(o) + dense(a.v)
    output sum(o)
    output mean(r.v)
    output last(g.v_pre)
    output a.a
    output q
    output z.v_pre
    output r.v
    output cl
    output sl
    plasticity STDP on s -> z
    plasticity STDP(a_plus = 0.02) on z -> z
    plasticity Triplet on z -> g
    plasticity STDP on s -> o
}
"""

SPIKING = ["c", "cl", "sl", "a", "q", "z", "g", "o"]


@pytest.fixture(scope="module")
def case():
    net = spikedsl.loads(SPEC).network("All").ir
    rng = np.random.default_rng(0)
    B = 3
    # raw data for poisson / latency (encoded by run), encoded data otherwise
    X = {"x": rng.random((B, 2, 6, 6)), "u": rng.normal(size=(30, B, 4)),
         "l": rng.random((B, 5)), "s": (rng.random((30, B, 8)) < 0.3).astype(np.float64)}
    w = reference.init_weights(net, seed=1)
    for k in list(w):
        if k.endswith(".weight") and w[k].ndim >= 2:
            w[k] = w[k] * 3
    w["c.weight"] *= 4
    w["o.fc.weight"] *= 2
    w["g.q.bias"] = np.full(8, 0.3)
    w["bn.running_mean"] = rng.uniform(-0.2, 0.5, 3)
    w["bn.running_var"] = rng.uniform(0.5, 2.0, 3)
    w["bn.weight"] = rng.uniform(0.5, 1.5, 3)
    w["bn.bias"] = rng.uniform(-0.2, 0.2, 3)
    rec = [lay.name for lay in net.layers]
    rec += [f"{lay.name}.{s}{p}" for lay in net.layers if lay.kind in ("neuron", "cell")
            for s in lay.states for p in ("", "_pre")]
    rec += [f"{lp.projection}.weight" for lp in net.plasticity]
    ref = reference.run(net, X, weights=w, record=rec)
    return net, X, w, rec, ref


def _same(a: dict, b: dict, spiking=SPIKING, tol=1e-12):
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=tol, err_msg=k)
    for k in spiking:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_the_network_uses_every_construct(case):
    """The comparison below means something: every layer is active, the
    refractory counters act, the plastic weights learn."""
    net, _X, _w, _rec, out = case
    kinds = {p.kind for lay in net.layers for p in lay.projections}
    assert kinds == {"dense", "conv2d", "sparse", "one_to_one"}
    methods = {lay.neuron.method for lay in net.layers if lay.kind == "neuron"}
    assert methods == {"exact", "euler", "rk2", "rk4", "update"}
    for k in SPIKING:
        assert 0 < out[k].sum() < out[k].size, f"{k}: {out[k].sum()} spikes"
    for k in ("c", "o", "q"):  # refractory 2 steps: no spike in the 2 steps after one
        z = out[k]
        assert not np.any(z[1:] * z[:-1]) and not np.any(z[2:] * z[:-2]), k
    for lp in net.plasticity:
        w = out[f"{lp.projection}.weight"]
        assert np.abs(w[-1] - w[0]).max() > 0.05, lp.projection
    assert np.abs(out["r.v"]).max() > 0.01


def test_numpy_and_torch_give_the_same_numbers(case):
    net, X, w, rec, ref = case
    got = reference.run(net, X, weights=w, record=rec, xp=torch)
    _same(ref, got)


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_torch_on_a_device_with_tensor_inputs_and_weights(case, device):
    net, X, w, rec, ref = case
    Xt = {k: torch.as_tensor(v, device=device) for k, v in X.items()}
    wt = {k: torch.as_tensor(v, device=device) for k, v in w.items()}
    got = reference.run(net, Xt, weights=wt, record=rec, xp=torch, device=device,
                        dtype=torch.float64)
    _same(ref, got)


def test_float32_on_both_array_modules(case):
    net, X, w, rec, ref = case
    a = reference.run(net, X, weights=w, record=rec, dtype=np.float32)
    b = reference.run(net, X, weights=w, record=rec, xp=torch, dtype=torch.float32)
    assert a["q"].dtype == np.float32 and b["q"].dtype == np.float32
    for k in ref:  # float32 rounding: close to float64, equal spikes where no near-tie
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-3, err_msg=k)
    assert (a["z"] == b["z"]).mean() > 0.99


def test_without_plasticity_the_weights_stay(case):
    net, X, w, _rec, ref = case
    frozen = net.model_copy(update={"plasticity": ()})
    a = reference.run(frozen, X, weights=w)
    b = reference.run(frozen, X, weights=w, xp=torch)
    _same(a, b, spiking=[])
    assert not np.array_equal(a["sum(o)"], ref["sum(o)"])  # the rules did change the run


def test_unknown_array_module_and_device():
    net = spikedsl.loads(SPEC).network("All").ir
    with pytest.raises(ValueError, match="unknown array module"):
        reference.run(net, {}, xp="jax")
    with pytest.raises(ValueError, match="numpy runs on the CPU only"):
        reference.run(net, {}, device="cuda")
