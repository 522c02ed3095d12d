"""Cross-target equality of the Brian2 target (float64): identical spike trains
and states within 1e-9 of the torch target and of the reference interpreter
(``spikedsl.runtime.reference``, on torch tensors and on numpy), for the same
random weights and inputs, on networks covering the step semantics of
docs/semantics.md."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("brian2")
torch = pytest.importorskip("torch")

from helpers.brian2 import (
    max_diff,
    random_inputs,
    random_weights,
    recordable,
    run_torch_target,
)

import spikedsl
from spikedsl.runtime import reference
from spikedsl.targets import brian2 as b2t

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-9

SPEC = """
import "../specs/neurons/lif.spk"
import "../specs/neurons/izhikevich.spk"
import "../specs/neurons/alif.spk"
import "../specs/neurons/cuba_lif.spk"
import "../specs/neurons/li.spk"

neuron DLIF {
    param beta = 0.9
    param th = 1.0
    state v = 0
    input I
    update v = beta * v + I
    spike v >= th
    reset v -= th
    refractory 2
}

neuron EI {
    param beta = 0.8
    state v = 0
    state g = 0
    input I_exc
    input I_inh
    update v = beta * v + I_exc - I_inh + 0.1 * g
    update g = 0.5 * g + I_exc
    spike v > 1
    reset v = 0; g += 0.2
}

# 1. feed-forward LIF (exact integration, hard reset)
network FeedForward {
    dt = 1 ms
    steps = 40
    input x[20] : poisson(max_rate = 0.5)
    layer h[16] = LIF(tau_mem = 5 ms) <- dense(x)
    layer o[4] = LIF(tau_mem = 8 ms) <- dense(h)
    output o
    output h.v
}

# 2. recurrence: a layer reading itself and a later layer (previous step)
network Recurrent {
    dt = 1 ms
    steps = 40
    input x[12] : poisson(max_rate = 0.5)
    layer h[10] = LIF(tau_mem = 5 ms) <- dense(x) + dense(h) + dense(o, bias = false)
    layer o[6] = LIF(tau_mem = 5 ms) <- dense(h) + dense(o)
    output o
    output h
}

# 3. delays on feed-forward and recurrent projections, sparse, one_to_one,
#    a state trace as a source
network Delays {
    dt = 1 ms
    steps = 30
    input x[10] : poisson(max_rate = 0.5)
    layer h[8] = DLIF <- dense(x, delay = 2) + dense(h, delay = 3) + sparse(x, p = 0.4, weight = 0.7, seed = 3)
    layer o[8] = DLIF <- one_to_one(h, weight = 1.5, delay = 1) + dense(o) + dense(h.v)
    output o
    output sum(h)
}

# 4. refractory periods (LIF with t_ref; counters, held states, ignored input)
network Refractory {
    dt = 1 ms
    steps = 40
    input x[10] : poisson(max_rate = 0.5)
    layer h[12] = LIF(tau_mem = 4 ms, t_ref = 3 ms) <- dense(x)
    layer o[5] = ALIF(tau_mem = 5 ms) <- dense(h)
    output o
    output h.v_pre
}

# 5. two-state Izhikevich neuron with units, forward Euler, recurrent output
network Izhikevich2 {
    dt = 0.5 ms
    steps = 60
    input x[20] : poisson(max_rate = 1.0)
    layer h[12] = Izhikevich <- dense(x)
    layer o[5] = Izhikevich(a = 0.1, d = 2 mV) <- dense(h) + dense(o)
    output o
    output h.v
    output o.u_pre
}

# 6. convolution, pooling, flatten
network ConvPool {
    dt = 1 ms
    steps = 15
    input x[1, 8, 8] : poisson(max_rate = 1.0)
    layer c = LIF(tau_mem = 3 ms, t_ref = 2 ms) <- conv2d(x, channels = 4, kernel = 3)
    layer p = avgpool2d(c, 2)
    layer f = flatten(p)
    layer h[16] = DLIF <- dense(f) + dense(h)
    layer o[10] = DLIF <- dense(h)
    output o
    output o.v_pre
}

# 7. several inputs, sign constraints, pre-reset traces, non-spiking readout
network ExcInh {
    dt = 1 ms
    steps = 25
    input x[10] : direct
    layer e[6] = EI <- dense(x, sign = excitatory) -> I_exc + dense(e, sign = inhibitory) -> I_inh
    layer i[6] = ALIF <- dense(e.v_pre) + dense(e.g)
    layer r[4] = LI <- dense(i)
    output e
    output r.v
    output mean(i.a)
}

# 8. more stages: padding/stride, max and sum pooling of spikes and values,
#    batchnorm (running statistics), dropout (identity), stateless projections
network Stages {
    dt = 1 ms
    steps = 12
    input x[2, 8, 8] : spikes
    layer c = CubaLIF(tau_syn = 2 ms, tau_mem = 3 ms) <- conv2d(x, channels = 3, kernel = 3, padding = 1, stride = 1)
    layer c2 = LIF(tau_mem = 3 ms) <- conv2d(c, channels = 2, kernel = 2, stride = 2)
    layer m = maxpool2d(c, 2)
    layer s = sumpool2d(c.v, 2)
    layer mv = maxpool2d(s, 2)
    layer b = batchnorm(m)
    layer f = flatten(b)
    layer d = dropout(f, p = 0.3)
    layer q[9] = sigmoid(dense(d))
    layer fm = flatten(mv)
    layer q2[7] = dense(fm)
    layer o[5] = DLIF <- dense(q) + dense(f) + dense(q2)
    output o
    output q
    output c2
}

# 9. units printed in stripped form (lowering dropped a unit), trained scalar and
#    per-neuron parameters from the weights, inputs read by the spike condition
#    and the reset, where/min/max/relu/sigmoid, a non-spiking source
neuron U {
    param tau = 5 ms [trainable]
    param th = -50 mV [per_neuron]
    state v = -65 mV
    input I : mV
    dv/dt = (-v - 60 mV + I) / tau
    spike v >= th
    reset v = -65 mV
    refractory 1.5 ms
}
neuron InSpike {
    param beta = 0.5
    state v = 0
    input I
    input J
    update v = beta * v + I + where(J > 0.5, 0.3, -0.1) + max(J, 0.2) * min(v, 1.0) + relu(I - 1) * sigmoid(v)
    spike v >= 1 + 0.1 * J
    reset v = 0.2 * J; v += 0.05
}
network Edge {
    dt = 0.5 ms
    steps = 40
    input x[6] : poisson(max_rate = 0.5)
    input y[6] : direct
    layer a[5] = U <- dense(x) + dense(y)
    layer s[3] = LI <- dense(a)
    layer b[4] = InSpike <- dense(a) + dense(y) -> J + dense(s) + dense(s.v, bias = false) -> J + dense(b, bias = false)
    output b
    output a.v
}
"""

EXTRA = {"Edge": {"a.tau": np.array(0.004), "a.th": np.linspace(-0.052, -0.048, 5)}}

CASES = {
    # network: (weight range, input probability, weights scale per projection)
    "FeedForward": ((-0.5, 4.0), 0.4, {"o": 3.0}),
    "Recurrent": ((-1.5, 3.0), 0.4, {"o.h": 2.0, "h.h": 0.5}),
    "Delays": ((-0.5, 1.5), 0.3, {}),
    "Refractory": ((-0.2, 4.0), 0.5, {"o": 3.0}),
    "Izhikevich2": ((0.0, 0.1), 0.5, {"o.o": 0.2}),
    "ConvPool": ((-0.5, 2.0), 0.4, {"h.h": 0.3}),
    "ExcInh": ((-0.5, 1.5), 0.0, {}),
    "Stages": ((-0.5, 2.5), 0.5, {}),
    "Edge": ((-0.5, 2.0), 0.4, {"a.x": 0.03, "a.y": 0.03}),
}


@pytest.fixture(scope="module")
def program():
    return spikedsl.loads(SPEC, file=os.path.join(HERE, "_brian2_equality.spk"))


_CACHE: dict = {}


def _case(program, name):
    """(net, weights, inputs, record keys, Brian2 result), simulated once per network."""
    if name not in _CACHE:
        net = program.network(name).ir
        (lo, hi), p, scale = CASES[name]
        W = random_weights(net, lo, hi, seed=3, scale=scale)
        W.update(EXTRA.get(name, {}))
        X = random_inputs(net, batch=2, p=p, seed=4)
        rec = recordable(net)
        _CACHE[name] = (net, W, X, rec, b2t.simulate(net, X, weights=W, record=rec))
    return _CACHE[name]


def _run(program, name):
    net, W, X, rec, got = _case(program, name)
    ref = reference.run(net, X, weights=W, record=rec, xp=torch)
    return net, W, X, rec, got, ref


def _spiking_layers(net):
    return [lay.name for lay in net.layers if lay.kind == "neuron" and lay.neuron.spiking]


@pytest.mark.parametrize("name", list(CASES))
def test_brian2_equals_reference(program, name):
    net, _, _, _, got, ref = _run(program, name)
    assert set(got) == set(ref)
    for lay in _spiking_layers(net):  # identical spike trains
        assert np.array_equal(got[lay], ref[lay]), f"{name}: spikes of {lay} differ"
    d, where = max_diff(got, ref)
    assert d <= TOL, f"{name}: {where} differs by {d:g}"
    # the test means something: every spiking layer spikes, but not always
    for lay in _spiking_layers(net):
        if lay in ("r", "s"):
            continue
        total = got[lay].sum()
        assert 0 < total < got[lay].size, f"{name}: layer {lay} has {total} spikes"
    for o in net.outputs:
        assert got[o.name].shape == ref[o.name].shape


@pytest.mark.parametrize("name", list(CASES))
def test_brian2_equals_torch_target(program, name):
    net, W, X, rec, got = _case(program, name)
    ref = run_torch_target(net, X, W, rec)
    for lay in _spiking_layers(net):
        assert np.array_equal(got[lay], ref[lay]), f"{name}: spikes of {lay} differ"
    d, where = max_diff(got, ref, [k for k in got if k in ref])
    assert d <= TOL, f"{name}: {where} differs by {d:g}"


@pytest.mark.parametrize("name", list(CASES))
def test_brian2_equals_the_numpy_reference(program, name):
    net, W, X, rec, got = _case(program, name)
    ref = reference.run(net, X, weights=W, record=rec)
    assert set(got) == set(ref)
    for lay in _spiking_layers(net):
        assert np.array_equal(got[lay], ref[lay]), f"{name}: spikes of {lay} differ"
    d, where = max_diff(got, ref)
    assert d <= TOL, f"{name}: {where} differs by {d:g}"


def test_batch_chunks_give_the_same_result(program):
    net = program.network("Recurrent").ir
    W = random_weights(net, -0.6, 1.4, seed=3)
    X = random_inputs(net, batch=3, p=0.3, seed=5)
    whole = b2t.simulate(net, X, weights=W, record=["h.v"])
    parts = b2t.simulate(net, X, weights=W, record=["h.v"], batch_size=2)
    for k in whole:
        assert np.array_equal(whole[k], parts[k])
    one = b2t.simulate(net, {"x": X["x"][:, 2:3]}, weights=W, record=["h.v"])
    assert np.array_equal(one["o"][:, 0], whole["o"][:, 2])
