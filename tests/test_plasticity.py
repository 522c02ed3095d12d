"""Synapse rules: the reference interpreter's ``Rule`` (numpy and torch)
against the analytic STDP pair rule, and the Brian2 target's native rule
against the reference (same weight trajectories, <= 1e-9)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers.brian2 import max_diff, random_inputs, random_weights, recordable

import spikedsl
from spikedsl.runtime import reference
from spikedsl.runtime.arrays import backend
from spikedsl.runtime.interpreter import Rule

HERE = os.path.dirname(os.path.abspath(__file__))

SPEC = """
neuron DLIF {
    param beta = 0.9
    param th = 1.0
    state v = 0
    input I
    update v = beta * v + I
    spike v >= th
    reset v = 0
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

# a rule without units, with an Euler-integrated trace and a nonlinear update
synapse Triplet {
    param a = 0.05
    param tau = 10.0
    state x = 0
    dx/dt = -x / tau   method euler
    on_pre  { x += 1; w += a * x * (1 - w) }
    on_post { w -= 0.5 * a * x * w }
}

network Plastic {
    dt = 1 ms
    steps = 60
    input x[12] : poisson(max_rate = 0.3)
    layer h[6] = DLIF <- dense(x, bias = false)
    output h
    plasticity STDP on x -> h
}

network PlasticMany {
    dt = 1 ms
    steps = 50
    input x[10] : poisson(max_rate = 0.3)
    layer h[8] = DLIF <- dense(x, bias = false, delay = 2, sign = excitatory) + sparse(h, p = 0.3, weight = 0.4, seed = 5)
    layer o[8] = DLIF <- one_to_one(h, weight = 0.6) + dense(h, bias = false)
    output o
    plasticity STDP on x -> h
    plasticity STDP(a_plus = 0.02) on h -> h
    plasticity Triplet on h -> o
}
"""


@pytest.fixture(scope="module")
def program():
    return spikedsl.loads(SPEC, file=os.path.join(HERE, "_plasticity.spk"))


XPS = [np, torch]


def ones(xp, *shape):
    return backend(xp).asarray(np.ones(shape))


def values(a) -> np.ndarray:
    return a.numpy() if hasattr(a, "numpy") else np.asarray(a)


@pytest.mark.parametrize("xp", XPS, ids=["numpy", "torch"])
def test_stdp_pair_is_the_analytic_exponential(program, xp):
    """One pre spike in step 0 and one post spike in step k: the weight changes
    by a_plus * exp(-k dt / tau_plus) (pre before post); the reverse order by
    -a_minus * exp(-k dt / tau_minus)."""
    lp = program.network("Plastic").ir.plasticity[0]
    for k in (1, 3, 7):
        r = Rule(lp, np.full((1, 1), 0.5), np.ones((1, 1), bool), 1, 1e-3, xp=xp)
        for n in range(k + 1):
            r.advance()
            if n == 0:
                r.on_pre(ones(xp, 1, 1))
            if n == k:
                r.on_post(ones(xp, 1, 1))
        dw = float(r.w[0, 0, 0]) - 0.5
        assert dw == pytest.approx(0.01 * math.exp(-k * 1e-3 / 20e-3), rel=1e-12)
        r = Rule(lp, np.full((1, 1), 0.5), np.ones((1, 1), bool), 1, 1e-3, xp=xp)
        for n in range(k + 1):
            r.advance()
            if n == 0:
                r.on_post(ones(xp, 1, 1))
            if n == k:
                r.on_pre(ones(xp, 1, 1))
        dw = float(r.w[0, 0, 0]) - 0.5
        assert dw == pytest.approx(-0.012 * math.exp(-k * 1e-3 / 20e-3), rel=1e-12)


@pytest.mark.parametrize("xp", XPS, ids=["numpy", "torch"])
def test_rule_keeps_missing_synapses_at_zero(program, xp):
    lp = program.network("Plastic").ir.plasticity[0]
    mask = np.array([[True, False], [False, True]])
    r = Rule(lp, np.full((2, 2), 0.5), mask, 3, 1e-3, xp=xp)
    for _ in range(5):
        r.advance()
        r.on_pre(ones(xp, 3, 2))
        r.on_post(ones(xp, 3, 2))
    w = values(r.w)
    assert np.all(w[:, ~mask] == 0) and np.all(w[:, mask] > 0.5)


@pytest.mark.parametrize("xp", XPS, ids=["numpy", "torch"])
def test_weights_are_clipped(program, xp):
    lp = program.network("Plastic").ir.plasticity[0]
    r = Rule(lp, np.full((1, 1), 0.999), np.ones((1, 1), bool), 1, 1e-3, xp=xp)
    for n in range(3):
        r.advance()
        r.on_pre(ones(xp, 1, 1))
        r.on_post(ones(xp, 1, 1))
        if n == 0:  # 0.999 + apre (0.01): clipped to w_max
            assert float(r.w[0, 0, 0]) == 1.0
    assert float(r.w.max()) <= 1.0


@pytest.mark.parametrize("name", ["Plastic", "PlasticMany"])
def test_brian2_weight_trajectories_equal_the_reference(program, name):
    pytest.importorskip("brian2")
    from spikedsl.targets import brian2 as b2t

    net = program.network(name).ir
    W = random_weights(net, 0.0, 1.5, seed=2)
    X = random_inputs(net, batch=2, p=0.3, seed=3)
    rec = recordable(net)
    got = b2t.simulate(net, X, weights=W, record=rec)
    ref = reference.run(net, X, weights=W, record=rec, xp=torch)
    d, where = max_diff(got, ref)
    assert d <= 1e-9, f"{where} differs by {d:g}"
    for lp in net.plasticity:
        key = f"{lp.projection}.weight"
        w = got[key]
        assert w.shape[:2] == (net.steps, 2)
        change = np.abs(w[-1] - w[0]).max()
        assert change > 1e-4, f"{key} hardly changes ({change:g})"
    for lay in ("h", "o"):
        if lay in got:
            assert 0 < got[lay].sum() < got[lay].size
