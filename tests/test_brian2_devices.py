"""The Brian2 target on the compiled devices: cpp_standalone (a fresh build
directory per run, device.reinit afterwards) and cython give the same spikes
and states as numpy.  Slow: they compile C++ (tens of seconds)."""

from __future__ import annotations

import glob
import os
import tempfile

import numpy as np
import pytest

pytest.importorskip("brian2")

from helpers.brian2 import max_diff, random_inputs, random_weights, recordable

import spikedsl
from spikedsl.targets import brian2 as b2t

HERE = os.path.dirname(os.path.abspath(__file__))

SPEC = """
neuron RLIF {
    param tau = 5 ms
    state v = 0
    input I
    dv/dt = (I - v) / tau
    spike v >= 1
    reset v = 0
    refractory 2 ms
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
network Tiny {
    dt = 1 ms
    steps = 30
    input x[8] : poisson(max_rate = 0.5)
    layer h[6] = RLIF <- dense(x, bias = false) + dense(h, delay = 2)
    layer o[3] = RLIF <- dense(h)
    output o
    output h.v_pre
    plasticity STDP on x -> h
}
"""


@pytest.fixture(scope="module")
def case():
    net = spikedsl.loads(SPEC, file=os.path.join(HERE, "_devices.spk")).network("Tiny").ir
    W = random_weights(net, 0.0, 3.0, seed=1)
    X = random_inputs(net, batch=2, p=0.4, seed=2)
    rec = recordable(net)
    ref = b2t.simulate(net, X, weights=W, record=rec)
    assert 0 < ref["h"].sum() < ref["h"].size
    return net, W, X, rec, ref


@pytest.mark.slow
def test_cpp_standalone_equals_numpy(case):
    import brian2

    net, W, X, rec, ref = case
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "spikedsl_brian2_*")))
    out = b2t.simulate(net, X, weights=W, record=rec, device="cpp_standalone")
    d, where = max_diff(out, ref)
    assert d <= 1e-12, f"{where}: {d:g}"  # libm's exp may differ from numpy's by an ulp
    for k in ("x", "h", "o"):
        assert np.array_equal(out[k], ref[k]), k
    # the build directory is gone and the runtime device is back
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "spikedsl_brian2_*")))
    assert after <= before
    assert type(brian2.get_device()).__name__ == "RuntimeDevice"
    # a second run (new directory, re-initialised device) gives the same again
    again = b2t.simulate(net, X, weights=W, record=["o"], device="cpp_standalone")
    assert np.array_equal(again["o"], ref["o"])


@pytest.mark.slow
def test_cython_equals_numpy(case):
    net, W, X, rec, ref = case
    out = b2t.simulate(net, X, weights=W, record=rec, device="cython")
    d, where = max_diff(out, ref)
    assert d <= 1e-12, f"{where}: {d:g}"
    for k in ("x", "h", "o"):
        assert np.array_equal(out[k], ref[k]), k
