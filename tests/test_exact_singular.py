"""Linear systems whose symbolic closed form fails at the parameters' values:
equal time constants (the generic solution divides by tau - tau_s) and
oscillating modes (the square root of a negative discriminant).  The step is
then solved with the values in the matrix; every target agrees with a
propagator computed independently (scipy's expm, float64)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import expm

import spikedsl
from spikedsl import targets
from spikedsl.runtime import reference

FIX = Path(__file__).parent / "fixtures" / "valid" / "exact-singular.spk"

ADAPTIVE = """
neuron Resonator {
    param tau = 10
    param tau_w = 100
    param a = 4
    state v = 0
    state w = 0
    input I
    dv/dt = (2.5 - v - w + I) / tau
    dw/dt = (a * v - w) / tau_w
    spike v >= 0.5
    reset v -= 0.5
}
network N {
    dt = 0.5
    steps = 400
    input x[3] : direct
    layer h[3] = Resonator <- one_to_one(x, weight = 1)
    output h
    output h.v
    output h.w
}
"""


def _propagate(A, b_of_n, steps, dt, reset=None):
    """x[n+1] = Phi x[n] + Gamma b[n] with Phi = e^{A dt}, Gamma = ∫ e^{A s} ds."""
    k = A.shape[0]
    M = np.zeros((2 * k, 2 * k))
    M[:k, :k], M[:k, k:] = A * dt, np.eye(k) * dt
    E = expm(M)
    phi, gamma = E[:k, :k], E[:k, k:]
    x = np.zeros(k)
    out = []
    for n in range(steps):
        x = phi @ x + gamma @ b_of_n(n)
        z = reset(x) if reset else False
        out.append((x.copy(), z))
    return out


def test_equal_time_constants_the_limit_solution():
    net = spikedsl.load(FIX).network("N").ir
    x = np.zeros((20, 1, 2))
    x[0] = 1.0  # one jump of 5 mV into i at step 0
    ref = reference.run(net, x, record=["h.v", "h.i"])
    tau, w, dt = 10e-3, 5e-3, 1e-4
    t = dt * np.arange(1, 21)  # the end of step n: the jump came at its start
    # i(t) = w e^{-t/tau}, v(t) = w (t/tau) e^{-t/tau}: the limit tau_s -> tau
    np.testing.assert_allclose(ref["h.i"][:, 0, 0], w * np.exp(-t / tau), rtol=1e-12)
    np.testing.assert_allclose(ref["h.v"][:, 0, 0], w * (t / tau) * np.exp(-t / tau), rtol=1e-12)
    for name in ("torch", "brian2", "nir"):
        if targets.unavailable(name) or targets.refusal(name, net):
            continue
        out = targets.run(name, net, x, dtype=np.float64, record=["h.v"])
        got = out["h.v"].detach().numpy() if hasattr(out["h.v"], "detach") else out["h.v"]
        np.testing.assert_allclose(np.asarray(got)[:, 0, 0], ref["h.v"][:, 0, 0], rtol=1e-12,
                                   atol=1e-18, err_msg=name)


@pytest.mark.parametrize("target", ["reference", "torch", "brian2"])
def test_oscillating_linear_neuron_equals_the_matrix_exponential(target):
    net = spikedsl.loads(ADAPTIVE, file="adaptive.spk").network("N").ir
    rng = np.random.default_rng(3)
    x = rng.random((400, 1, 3)) * 0.5
    tau, tau_w, a, dt = 10.0, 100.0, 4.0, 0.5
    A = np.array([[-1 / tau, -1 / tau], [a / tau_w, -1 / tau_w]])
    assert np.iscomplex(np.linalg.eigvals(A)).any()  # oscillating modes
    if target == "reference":
        out = reference.run(net, x, record=["h.v", "h.w"])
    else:
        out = targets.run(target, net, x, dtype=np.float64, record=["h.v", "h.w"])
    out = {k: np.asarray(v.detach() if hasattr(v, "detach") else v) for k, v in out.items()}
    for j in range(3):
        state = np.zeros(2)
        M = np.zeros((4, 4))
        M[:2, :2], M[:2, 2:] = A * dt, np.eye(2) * dt
        E = expm(M)
        spikes = 0
        for n in range(400):
            b = np.array([(2.5 + x[n, 0, j]) / tau, 0.0])
            state = E[:2, :2] @ state + E[:2, 2:] @ b
            if state[0] >= 0.5:
                state[0] -= 0.5
                spikes += 1
                assert out["h"][n, 0, j] == 1.0, (j, n)
            np.testing.assert_allclose(out["h.v"][n, 0, j], state[0], rtol=0, atol=1e-12)
            np.testing.assert_allclose(out["h.w"][n, 0, j], state[1], rtol=0, atol=1e-12)
        assert out["h"][:, 0, j].sum() == spikes > 3


def test_a_subnormal_time_constant_loads_and_caches(monkeypatch, tmp_path):
    """A time constant of -2.2e-309 makes the step's numbers infinite: the
    cached step keeps them (JSON Infinity) and reads them back."""
    monkeypatch.setenv("SPIKEDSL_CACHE", str(tmp_path))
    text = ("neuron LIF {\n    param tau = -2.225073858507203e-309\n    state v = 0\n"
            "    input I\n    dv/dt = (I - v) / tau\n    spike v >= 1\n    reset v = 0\n}\n"
            "network Net {\n    steps = 5\n    input x[4] : direct\n"
            "    layer h[3] = LIF <- dense(x)\n    output h\n}\n")
    for _ in range(2):  # computed, then read from the cache
        spikedsl.loads(text, file="subnormal.spk").network("Net")
