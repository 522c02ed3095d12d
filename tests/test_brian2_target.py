"""The Brian2 target: the generated script (deterministic, ruff-clean, runnable
on its own), physical units (analytic LIF), weights from .npz files and torch
checkpoints, and the constructs it refuses."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("brian2")

from helpers.brian2 import max_diff, random_inputs, random_weights

import spikedsl
from spikedsl.errors import Unsupported
from spikedsl.targets import brian2 as b2t

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

UNITS = """
neuron CondLIF {
    param tau    = 10 ms
    param R      = 100 Mohm
    param v_rest = -70 mV
    param v_th   = -50 mV
    state v = v_rest
    input I : nA
    dv/dt = (v_rest - v + R * I) / tau
    spike v >= v_th
    reset v = v_rest
}

network Units {
    dt = 0.1 ms
    steps = 160
    input x[2] : direct
    layer n[2] = CondLIF <- one_to_one(x, weight = 1 A)
    output n
    output n.v
}
"""

SMALL = """
neuron DLIF {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v >= 1
    reset v = 0
}

network Small {
    steps = 20
    input x[6] : poisson(max_rate = 0.5)
    layer h[5] = DLIF <- dense(x) + dense(h)
    layer o[3] = DLIF <- dense(h)
    output o
    output sum(o)
    output h.v
}
"""


@pytest.fixture(scope="module")
def units_net():
    return spikedsl.loads(UNITS, file=os.path.join(HERE, "_units.spk")).network("Units").ir


@pytest.fixture(scope="module")
def small_net():
    return spikedsl.loads(SMALL, file=os.path.join(HERE, "_small.spk")).network("Small").ir


# ----------------------------------------------------------------- units
def test_units_are_carried_into_brian2(units_net):
    src = b2t.convert(units_net)
    for line in ("v : volt", "I : amp", "R : ohm (shared, constant)",
                 "tau : second (shared, constant)", "v_th : volt (shared, constant)"):
        assert line in src, line
    assert "DT = 0.0001 * second" in src


def test_lif_with_units_matches_the_analytic_solution(units_net):
    """v(t) = v_inf + (v_rest - v_inf) exp(-t / tau), v_inf = v_rest + R I; the
    first crossing of v_th is at tau ln((v_inf - v_rest) / (v_inf - v_th))."""
    currents = np.array([0.4e-9, 0.5e-9])  # amperes
    x = np.broadcast_to(currents, (units_net.steps, 1, 2)).copy()
    out = b2t.simulate(units_net, {"x": x})
    dt, tau, R, v_rest, v_th = 1e-4, 10e-3, 100e6, -70e-3, -50e-3
    for k, i in enumerate(currents):
        v_inf = v_rest + R * i
        t_star = tau * math.log((v_inf - v_rest) / (v_inf - v_th))
        steps = np.nonzero(out["n"][:, 0, k])[0]
        first = (steps[0] + 1) * dt  # a spike in step n belongs to t = (n + 1) dt
        assert t_star <= first < t_star + dt
        assert first == pytest.approx(math.ceil(t_star / dt - 1e-9) * dt)
        # before the first spike the membrane is the analytic solution on the grid
        t = (np.arange(steps[0]) + 1) * dt
        analytic = v_inf + (v_rest - v_inf) * np.exp(-t / tau)
        assert np.max(np.abs(out["n.v"][: steps[0], 0, k] - analytic)) < 1e-12
        # after each reset the trajectory repeats: regular spikes
        assert np.all(np.diff(steps) == steps[0] + 1)
    assert out["n"][:, 0, 0].sum() < out["n"][:, 0, 1].sum()


# ----------------------------------------------------------------- the script
def test_script_is_deterministic_and_names_the_schedule(small_net):
    a, b = b2t.convert(small_net), b2t.convert(small_net)
    assert a == b
    assert 'when="start"' in a and "order=" in a
    assert "run_regularly" in a and "I_post += w" in a


def test_script_is_ruff_clean(small_net, tmp_path):
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    path = tmp_path / "small_brian2.py"
    path.write_text(b2t.convert(small_net))
    r = subprocess.run([ruff, "check", "--isolated", "--select", "E,F,W,I", "--line-length",
                        "120", str(path)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_script_runs_on_its_own(small_net, tmp_path):
    W = random_weights(small_net, -0.5, 2.0, seed=1)
    X = random_inputs(small_net, batch=2, seed=2)
    np.savez(tmp_path / "w.npz", **W)
    np.savez(tmp_path / "x.npz", **X)
    path = tmp_path / "small_brian2.py"
    path.write_text(b2t.convert(small_net))
    r = subprocess.run([sys.executable, str(path), "--weights", str(tmp_path / "w.npz"),
                        "--inputs", str(tmp_path / "x.npz"), "--output",
                        str(tmp_path / "out.npz")], check=False, capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "o: shape [20, 2, 3]" in r.stdout
    with np.load(tmp_path / "out.npz") as f:
        standalone = {k: f[k] for k in f.files}
    inproc = b2t.simulate(small_net, X, weights=W)
    d, where = max_diff(standalone, inproc)
    assert d == 0.0, where


def test_build_returns_a_brian2_network(small_net):
    import brian2

    W = random_weights(small_net, -0.5, 2.0, seed=1)
    X = random_inputs(small_net, batch=1, seed=2)
    net, handles = b2t.build(small_net, weights=W, inputs=X, record=["h"])
    assert isinstance(net, brian2.Network)
    assert {"g_x", "g_h", "g_o", "s_h_x", "s_h_h", "s_o_h"} <= set(handles["objects"])
    net.run(handles["duration"], namespace={})
    out = handles["collect"]()
    ref = b2t.simulate(small_net, X, weights=W, record=["h"])
    assert max_diff(out, ref)[0] == 0.0


def test_outputs_and_records(small_net):
    W = random_weights(small_net, -0.5, 2.0, seed=1)
    X = random_inputs(small_net, batch=3, seed=2)
    out = b2t.simulate(small_net, X, weights=W, record=["x", "h", "h.v_pre"])
    assert out["o"].shape == (20, 3, 3) and out["sum(o)"].shape == (3, 3)
    assert np.array_equal(out["sum(o)"], out["o"].sum(0))
    assert np.array_equal(out["x"], X["x"])
    with pytest.raises(KeyError, match="cannot record"):
        b2t.simulate(small_net, X, weights=W, record=["nope"])


def test_raw_inputs_are_encoded_like_the_torch_target(small_net):
    from spikedsl.runtime import reference

    W = random_weights(small_net, -0.5, 2.0, seed=1)
    raw = np.random.default_rng(0).random((2, 6))
    enc = reference.encode(small_net.inputs[0], raw, small_net.steps)
    a = b2t.simulate(small_net, raw, weights=W)
    b = b2t.simulate(small_net, {"x": enc}, weights=W)
    assert np.array_equal(a["o"], b["o"])


# ----------------------------------------------------------------- weights
def test_weights_from_npz_and_checkpoint(small_net, tmp_path):
    torch = pytest.importorskip("torch")
    W = random_weights(small_net, -0.5, 2.0, seed=1)
    X = random_inputs(small_net, batch=2, seed=2)
    ref = b2t.simulate(small_net, X, weights=W)
    np.savez(tmp_path / "w.npz", **W)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {k: torch.as_tensor(v) for k, v in W.items()}, "epoch": 3}, ckpt)
    for source in (str(tmp_path / "w.npz"), str(ckpt)):
        out = b2t.simulate(small_net, X, weights=source)
        assert max_diff(out, ref)[0] == 0.0, source
    with pytest.raises(spikedsl.SpecError, match="no such file"):
        b2t.simulate(small_net, X, weights=str(tmp_path / "missing.npz"))


def test_wrong_weight_shape_is_a_clear_error(small_net):
    W = random_weights(small_net, -0.5, 2.0, seed=1)
    W["h.x.weight"] = W["h.x.weight"].T
    with pytest.raises(ValueError, match=r"'h.x.weight' has shape \[6, 5\], expected \[5, 6\]"):
        b2t.simulate(small_net, random_inputs(small_net), weights=W)


# ----------------------------------------------------------------- refusals
REFUSED = """
neuron DLIF {
    param beta = 0.9
    state v = 0
    input I
    update v = beta * v + I
    spike v >= 1
    reset v = 0
}
synapse Hebb {
    state tr = 0
    on_pre { w += 0.01 }
}
network Cell {
    steps = 5
    input x[4] : direct
    layer c = slstm(x, hidden = 3)
    output c
}
network ConvRule {
    steps = 5
    input x[1, 4, 4] : poisson(max_rate = 0.5)
    layer c = DLIF <- conv2d(x, channels = 2, kernel = 3)
    output c
    plasticity Hebb on x -> c
}
network DelayedValue {
    steps = 5
    input x[4] : poisson(max_rate = 0.5)
    layer h[3] = DLIF <- dense(x)
    layer o[3] = DLIF <- dense(h.v, delay = 2)
    output o
}
"""


@pytest.mark.parametrize("name, what, line", [
    ("Cell", "the slstm cell 'c'", 17),
    ("ConvRule", "plasticity on the conv2d projection 'c'", 23),
    ("DelayedValue", "the delay of the projection 'o' from 'h.v'", 31),
])
def test_unsupported_constructs_are_refused(name, what, line):
    net = spikedsl.loads(REFUSED, file=os.path.join(HERE, "_refused.spk")).network(name).ir
    with pytest.raises(Unsupported) as e:
        b2t.convert(net)
    msg = str(e.value)
    assert f"brian2 cannot express {what}" in msg
    assert f"_refused.spk:{line}:" in msg
